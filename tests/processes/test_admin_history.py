"""The admin's History: each action staff take on a process or a subscription is a line of it (and of "Recent
actions"); and the bulk retry, which lists what it will and will not retry before it retries anything."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from processes import admin_bulk_retry
from processes.models import EngineSettings, Process
from processes.services import retry_process, start_process
from subscriptions.models import Subscription
from tests.factories import UserFactory
from tests.processes import flows

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/processes/process/"


def action_url(process: Process, action: str) -> str:
    return reverse(f"admin:processes_process_{action}", args=[process.pk])


def history(obj: Process | Subscription) -> list[str]:
    """The History lines of an object, oldest first."""
    entries = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk))
    return [entry.get_change_message() for entry in entries.order_by("action_time", "id")]


def history_page(client: Client, obj: Process | Subscription) -> str:
    name = "processes_process" if isinstance(obj, Process) else "subscriptions_subscription"
    response = client.get(reverse(f"admin:{name}_history", args=[obj.pk]))
    assert response.status_code == 200
    return response.content.decode()


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def failed_process(by: str = "alice") -> Process:
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by=by)
    assert process.status == "failed"
    return process


def suspended_process() -> Process:
    process = start_process("t_input", by="alice")
    assert process.status == "suspended"
    return process


@pytest.fixture
def runner(db):
    user = UserFactory(username="runner", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_process", content_type__app_label="processes"))
    return user


def as_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- History lines ---------------------------------------------------------------------------------------
def test_retry_resume_skip_and_abort_in_the_admin_are_lines_of_the_process_history_and_recent_actions(runner):
    client = as_client(runner)
    retried, skipped = failed_process(), failed_process()
    resumed, aborted = suspended_process(), suspended_process()

    client.post(action_url(retried, "retry"))
    client.post(action_url(skipped, "skip"), {"reason": "  written by hand\n in the NOC "})
    client.post(action_url(resumed, "resume"), {"colour": "green"})
    client.post(action_url(aborted, "abort"), {"reason": "customer cancelled"})

    assert history(retried) == ["Retried"]
    assert history(skipped) == ["Skipped step 'Write B then maybe fail': written by hand in the NOC"]
    assert history(resumed) == ["Resumed at step 'Choose a colour'"]
    assert history(aborted) == ["Aborted: customer cancelled"]
    assert LogEntry.objects.filter(user=runner, action_flag=CHANGE).count() == 4
    page = history_page(client, aborted)
    assert "Aborted: customer cancelled" in page and "runner" in page
    assert "Retried" in history_page(client, retried)
    index = client.get(reverse("admin:index")).content.decode()
    recent = index[index.index('id="recent-actions-module"'):]
    for line in ("Retried", "Aborted: customer cancelled", "Resumed at step &#x27;Choose a colour&#x27;"):
        assert f">{line}</span>" in recent, line
    assert f'href="{reverse("admin:processes_process_change", args=[retried.pk])}"' in recent


def test_an_abort_without_a_reason_says_just_that(runner):
    process = suspended_process()

    as_client(runner).post(action_url(process, "abort"), {"reason": ""})

    assert history(process) == ["Aborted"]


def test_delivering_a_callback_by_hand_is_a_line_of_the_process_history(fake_system, runner):
    process = start_process("t_callback", by="alice")
    assert process.status == "awaiting_callback"

    as_client(runner).post(action_url(process, "deliver_callback"),
                           {"payload": json.dumps({"ok": True, "device": "rtr-1"}), "reason": "NOC phoned it in"})

    assert Process.objects.get(pk=process.pk).status == "completed"
    assert history(process) == ["Delivered the callback of step 'Deploy config' by hand: NOC phoned it in"]


def test_a_refused_action_writes_no_history_line(runner):
    completed, failed = start_process("t_writes", by="alice"), failed_process()
    client = as_client(runner)
    aborted = suspended_process()
    client.post(action_url(aborted, "abort"), {"reason": "first"})

    client.post(action_url(completed, "retry"))
    client.post(action_url(aborted, "abort"), {"reason": "second"})
    client.post(action_url(completed, "skip"), {"reason": "why not"})
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})
    client.post(action_url(failed, "retry"))

    assert history(completed) == [] and history(failed) == []
    assert history(aborted) == ["Aborted: first"]
    assert Process.objects.get(pk=failed.pk).status == "failed"


def test_starting_a_workflow_and_setting_in_sync_are_lines_of_the_subscription_history(
        staff_client, staff_user, active_node):
    base = f"/admin/subscriptions/subscription/{active_node.pk}"
    started = staff_client.post(f"{base}/start/validate_node/", {})
    process = Process.objects.get(workflow__name="validate_node")
    assert started["Location"] == reverse("admin:processes_process_change", args=[process.pk])
    Subscription.objects.filter(pk=active_node.pk).update(insync=False)
    staff_client.post(f"{base}/set-in-sync/", {"reason": "checked the router by hand"})
    staff_client.post(f"{base}/set-in-sync/", {"reason": "again"})  # refused: it is in sync: no line

    assert history(active_node) == [
        f"Started validate_node (process {str(process.pk)[:8]}…)", "Set in sync: checked the router by hand",
    ]
    page = history_page(staff_client, active_node)
    assert f"Started validate_node (process {str(process.pk)[:8]}…)" in page
    assert "Set in sync: checked the router by hand" in page and staff_user.username in page


# --- bulk retry ------------------------------------------------------------------------------------------
def hidden_fields(html: str) -> list[tuple[str, str]]:
    """The hidden fields of the confirmation's form, as the browser would send them."""
    form = html[html.index('id="retry-selected-form"'):]
    form = form[:form.index("</form>")]
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)


def confirm(client: Client, html: str, url: str = CHANGELIST) -> Any:
    data: dict[str, list[str]] = {}
    for name, value in hidden_fields(html):
        data.setdefault(name, []).append(value)
    return client.post(url, data, follow=True)


def select(client: Client, processes: list[Process], url: str = CHANGELIST) -> Any:
    return client.post(url, {"action": "retry_selected", "index": "0",
                             "_selected_action": [str(p.pk) for p in processes]})


def statuses(*processes: Process) -> list[str]:
    return [Process.objects.get(pk=p.pk).status for p in processes]


def test_bulk_retry_lists_what_it_will_and_will_not_retry_and_retries_only_on_confirm(runner):
    flows.CONTROL["fail_times"] = 2
    first, second = start_process("t_writes", by="alice"), start_process("t_writes", by="alice")
    completed = start_process("t_writes", by="alice")
    assert statuses(first, second, completed) == ["failed", "failed", "completed"]
    client = as_client(runner)

    page = select(client, [first, second, completed])

    assert page.status_code == 200
    html = page.content.decode()
    assert statuses(first, second, completed) == ["failed", "failed", "completed"]  # nothing yet
    to_retry = html[html.index('id="retry-list"'):html.index('id="not-retried-list"')]
    for process in (first, second):
        row = to_retry[to_retry.index(f'id="retry-{process.pk}"'):]
        row = row[:row.index("</tr>")]
        detail = reverse("admin:processes_process_change", args=[process.pk])
        assert f'<a href="{detail}">{str(process.pk)[:8]}…</a>' in row and "t_writes" in row
        assert "status-failed" in row and "the external system said no" in row
    not_retried = html[html.index('id="not-retried-list"'):]
    assert f'id="not-retried-{completed.pk}"' in not_retried
    assert "it is completed; only failed, waiting, API unavailable, inconsistent data processes can be retried" \
        in not_retried
    assert '<button id="confirm" type="submit" class="button default">Yes, retry 2 processes</button>' in html
    assert sorted(field for field in hidden_fields(html) if field[0] != "csrfmiddlewaretoken") == sorted([
        ("_not_retried", str(completed.pk)), ("_selected_action", str(first.pk)),
        ("_selected_action", str(second.pk)), ("action", "retry_selected"), ("post", "yes"),
    ])

    done = confirm(client, html)

    assert done.redirect_chain == [(CHANGELIST, 302)]
    assert messages_of(done) == [
        f"Retried 2 processes (now 2 completed). Not retried 1: {str(completed.pk)[:8]}… (t_writes): it is "
        f"completed; only failed, waiting, API unavailable, inconsistent data processes can be retried."
    ]
    assert statuses(first, second, completed) == ["completed"] * 3
    assert history(first) == history(second) == ["Retried (bulk retry from the list)"]
    assert history(completed) == []


def test_bulk_retry_says_which_could_not_be_retried_on_confirm_and_why(runner):
    flows.CONTROL["fail_times"] = 2
    first, second = start_process("t_writes", by="alice"), start_process("t_writes", by="alice")
    client = as_client(runner)
    failed_only = f"{CHANGELIST}?status__exact=failed"
    html = select(client, [first, second], failed_only).content.decode()
    retry_process(second.pk, by="bob")  # someone else was quicker: it left the filtered list, too

    done = confirm(client, html, failed_only)

    [message] = messages_of(done)
    assert message.startswith("Retried 1 process (now 1 completed). Could not retry 1: ")
    assert f"{str(second.pk)[:8]}… (t_writes): cannot retry process {second.pk}: it is completed" in message
    assert history(first) == ["Retried (bulk retry from the list)"] and history(second) == []


def test_bulk_retry_of_nothing_retryable_offers_no_confirm_and_cancel_keeps_the_filters(runner):
    completed = start_process("t_writes", by="alice")
    client = as_client(runner)
    url = f"{CHANGELIST}?status__exact=completed"

    html = select(client, [completed], url).content.decode()

    assert 'id="nothing-to-retry"' in html and 'id="confirm"' not in html
    assert f'href="{url}" class="button cancel-link" id="cancel"' in html
    assert statuses(completed) == ["completed"] and history(completed) == []


def test_bulk_retry_of_more_than_the_limit_asks_to_narrow_the_list(runner, monkeypatch):
    monkeypatch.setattr(admin_bulk_retry, "BULK_RETRY_MAX", 1)
    flows.CONTROL["fail_times"] = 2
    first, second = start_process("t_writes", by="alice"), start_process("t_writes", by="alice")
    client = as_client(runner)

    response = client.post(CHANGELIST, {"action": "retry_selected", "index": "0",
                                        "_selected_action": [str(first.pk), str(second.pk)]}, follow=True)

    assert messages_of(response) == ["Select at most 1 processes to retry at once; narrow the list with a filter "
                                     "(failed, a workflow) first. Nothing was retried."]
    assert statuses(first, second) == ["failed", "failed"]


def test_without_the_run_permission_bulk_retry_is_neither_offered_nor_done(runner):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_process", content_type__app_label="processes"))
    process = failed_process()
    client = as_client(viewer)

    assert "retry_selected" not in client.get(CHANGELIST).content.decode()
    client.post(CHANGELIST, {"action": "retry_selected", "post": "yes", "_selected_action": [str(process.pk)]})

    assert statuses(process) == ["failed"] and history(process) == []
