"""The process admin's callbacks and timers: the box saying what a process waits for, and delivery by hand."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from processes.callbacks import add_progress, deliver
from processes.models import CallbackToken, Process, ProcessStep
from processes.services import start_process
from tests.factories import UserFactory
from tests.processes import wait_flows
from tests.processes.conftest import log

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"ok": True, "device": "rtr-1"}


def detail_url(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def deliver_url(process: Process) -> str:
    return reverse("admin:processes_process_deliver_callback", args=[process.pk])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def snapshot(process: Process) -> tuple[Any, ...]:
    """Everything a refused delivery must leave as it was."""
    fresh = Process.objects.get(pk=process.pk)
    return (fresh.status, fresh.current_step, fresh.last_modified_at, log(process),
            list(CallbackToken.objects.filter(process=process).order_by("id")
                 .values_list("received_at", "received_by", "closed_at")))


def waiting_box(html: str) -> str:
    start = html.index('id="process-waiting"')
    return html[start:html.index("</div>", start)]


def awaiting(fake_system: Any) -> Process:
    process = start_process("t_callback", by="alice")
    assert process.status == "awaiting_callback"
    return process


@pytest.fixture
def viewer(db):
    """Staff who may look at processes but not run them."""
    user = UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_process", content_type__app_label="processes"))
    return user


# --- the waiting box -------------------------------------------------------------------------------------
def test_the_page_of_an_awaiting_process_shows_the_step_its_deadline_and_the_progress_newest_last(
        fake_system, staff_client):
    process = awaiting(fake_system)
    token = fake_system.last("deploy")["token"]
    add_progress(process.process_id, token, "config rendered")
    add_progress(process.process_id, token, "pushing to <rtr-1>")
    callback = CallbackToken.objects.get(process=process)

    html = staff_client.get(detail_url(process)).content.decode()

    box = waiting_box(html)
    assert html.index('id="process-waiting"') < html.index('id="process-timeline"')  # near the top
    assert "Awaiting the callback of step <strong>'Deploy config'</strong>" in box
    since = timezone.localtime(callback.issued_at).strftime("%Y-%m-%d %H:%M:%S")
    deadline = timezone.localtime(callback.deadline).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"since <time [^>]*>{since} UTC</time>\s*— deadline <time [^>]*>{deadline} UTC</time>", box)
    assert re.search(r'class="waiting-relative">\(in (9 min \d+ s|10 min)\)</span>', box)
    progress = re.findall(r"<li><time [^>]*>([\w: -]+)</time> <span class=\"progress-message\">([^<]*)</span>", box)
    assert [text for _, text in progress] == ["config rendered", "pushing to &lt;rtr-1&gt;"]  # newest last
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", moment) for moment, _ in progress)
    assert f'id="action-deliver_callback" href="{deliver_url(process)}"' in html
    assert re.search(r'<tr class="step-row step-awaiting_callback" id="step-3">.*?'
                     r'status-awaiting_callback">awaiting callback</span>', html, re.S)


def test_the_waiting_box_takes_its_colours_from_the_admins_variables_so_dark_mode_works():
    styles = Path(settings.BASE_DIR, "templates/admin/processes/process/_styles.html").read_text()
    rules = [body for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", styles) if "process-waiting" in selector]
    colours = re.findall(r"(?:color|background|border[\w-]*)\s*:\s*([^;]+);", "".join(rules))
    assert colours and "var(--message-warning-bg)" in colours
    assert not [value for value in colours if "#" in value or "rgb" in value or re.search(r"\bwhite\b", value)]


def test_the_page_of_a_process_waiting_for_a_timer_says_until_when_and_offers_no_delivery(staff_client, monkeypatch):
    start = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    monkeypatch.setitem(wait_flows.WINDOW, "start", start.isoformat())
    process = start_process("t_timer", by="alice")
    assert process.status == "waiting"

    html = staff_client.get(detail_url(process)).content.decode()

    box = waiting_box(html)
    assert '<div class="process-waiting waiting-timer" id="process-waiting">' in html
    until = timezone.localtime(start).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"Waiting for timer <strong>'Wait for the maintenance window'</strong>\s*"
                     rf"until <time [^>]*>{until} UTC</time>", box)
    assert re.search(r"\(in (59 min \d+ s|1 h)\)", box)
    assert 'id="action-deliver_callback"' not in html
    # The timer's own row is a wait, not a failure.
    row = re.search(r'<tr class="step-row step-waiting[^"]*" id="step-3">', html)
    assert row and "step-failed" not in row.group(0)
    assert "a timer: the process waited here, holding no worker" in html


def test_a_process_that_waits_for_nothing_shows_no_box(fake_system, staff_client):
    process = awaiting(fake_system)
    deliver(process.process_id, None, GOOD, by="dave", reason="phoned")

    html = staff_client.get(detail_url(process)).content.decode()

    assert Process.objects.get(pk=process.pk).status == "completed"
    assert 'id="process-waiting"' not in html


# --- delivery by hand ------------------------------------------------------------------------------------
def test_delivering_by_hand_completes_the_process_and_the_log_says_who_and_why(fake_system, staff_client, staff_user):
    process = awaiting(fake_system)

    page = staff_client.get(deliver_url(process))
    assert page.status_code == 200
    form_html = page.content.decode()
    assert '<textarea name="payload"' in form_html and '<textarea name="reason"' in form_html
    assert "Awaiting the callback of step" in form_html  # what it answers
    assert '<button id="confirm" type="submit" class="button default">Deliver this answer</button>' in form_html

    response = staff_client.post(deliver_url(process), {"payload": json.dumps(GOOD),
                                                        "reason": "  the NOC confirmed it by phone "}, follow=True)

    assert response.redirect_chain == [(detail_url(process), 302)]
    assert messages_of(response) == [
        f"Delivered the callback of step 'Deploy config' by hand to process {process.process_id}: "
        f"it is now completed."]
    assert log(process) == [("Start", "success"), ("Write A", "success"), ("Deploy config", "awaiting_callback"),
                            ("Deploy config", "callback"), ("Deploy config", "success"), ("Write C", "success"),
                            ("Done", "complete")]
    row = ProcessStep.objects.get(process=process, status="callback")
    who = staff_user.username
    assert (row.created_by, row.error) == (who, f"delivered by hand by {who}: the NOC confirmed it by phone")
    assert row.state_after()["deploy_result"] == GOOD
    assert CallbackToken.objects.get(process=process).received_by == who
    html = response.content.decode()
    assert f'class="step-note">delivered by hand by {who}: the NOC confirmed it by phone<' in html
    assert 'status-callback">callback received</span>' in html


def test_an_answer_the_step_refuses_fails_the_process_and_says_why(fake_system, staff_client):
    process = awaiting(fake_system)

    response = staff_client.post(deliver_url(process), {"payload": '{"ok": false, "error": "port busy"}',
                                                        "reason": "read off the device"}, follow=True)

    [message] = messages_of(response)
    assert message.startswith(f"Delivered the callback of step 'Deploy config' by hand to process "
                              f"{process.process_id}: it is now failed.")
    assert "the device refused the configuration: port busy" in message
    assert Process.objects.get(pk=process.pk).status == "failed"


def test_invalid_json_shows_the_error_with_what_was_typed_and_changes_nothing(fake_system, staff_client):
    process = awaiting(fake_system)
    before = snapshot(process)

    for typed, error in (("{ok: true", "Enter a valid JSON."), ("", "This field is required."),
                         ("   ", "Enter a valid JSON."), ("[" * 40 + "]" * 40, "nested too deeply"),
                         # Valid to Python's parser, refused by the service (put on the field, not a traceback).
                         ('{"ok": NaN}', "cannot be stored in the state")):
        response = staff_client.post(deliver_url(process), {"payload": typed, "reason": "phoned"})
        assert response.status_code == 200
        html = response.content.decode()
        assert re.search(r'class="form-row errors field-payload">\s*<ul class="errorlist[^>]*><li>[^<]*'
                         + re.escape(error), html), typed
        assert "Traceback" not in html
        if typed.strip():
            assert re.search(rf">\s*{re.escape(typed)}</textarea>", html.replace("&quot;", '"'))  # as typed
        assert snapshot(process) == before


def test_a_delivery_without_a_reason_is_refused_and_changes_nothing(fake_system, staff_client):
    process = awaiting(fake_system)
    before = snapshot(process)

    for blank in ({"payload": json.dumps(GOOD)}, {"payload": json.dumps(GOOD), "reason": "   "}):
        response = staff_client.post(deliver_url(process), blank)
        assert response.status_code == 200
        assert re.search(r'class="form-row errors field-reason">\s*<ul class="errorlist[^>]*><li>This field is '
                         r'required.</li>', response.content.decode())
        assert snapshot(process) == before


def test_without_the_run_permission_the_page_and_the_delivery_are_403_and_the_button_is_hidden(
        fake_system, viewer):
    process = awaiting(fake_system)
    client = Client()
    client.force_login(viewer)
    before = snapshot(process)

    html = client.get(detail_url(process)).content.decode()

    assert 'id="process-waiting"' in html and 'id="action-deliver_callback"' not in html
    assert client.get(deliver_url(process)).status_code == 403
    assert client.post(deliver_url(process), {"payload": json.dumps(GOOD), "reason": "phoned"}).status_code == 403
    assert snapshot(process) == before


def test_a_process_that_awaits_no_callback_is_refused_with_a_message_and_nothing_changes(fake_system, staff_client):
    process = awaiting(fake_system)
    staff_client.post(deliver_url(process), {"payload": json.dumps(GOOD), "reason": "phoned"})
    assert Process.objects.get(pk=process.pk).status == "completed"
    before = snapshot(process)

    assert 'id="action-deliver_callback"' not in staff_client.get(detail_url(process)).content.decode()
    shown = staff_client.get(deliver_url(process), follow=True)
    posted = staff_client.post(deliver_url(process), {"payload": json.dumps(GOOD), "reason": "again"}, follow=True)

    assert shown.redirect_chain == [(detail_url(process), 302)]
    assert messages_of(shown) == [
        f"Cannot deliver a callback by hand to process {process.process_id}: it is completed."]
    assert posted.redirect_chain == [(detail_url(process), 302)]
    [message] = messages_of(posted)
    assert "not awaiting a callback" in message and "Traceback" not in posted.content.decode()
    assert snapshot(process) == before


def test_a_delivery_after_the_deadline_is_an_error_message_not_a_traceback(fake_system, staff_client):
    process = awaiting(fake_system)
    CallbackToken.objects.filter(process=process).update(deadline=timezone.now() - timedelta(seconds=1))

    html = staff_client.get(detail_url(process)).content.decode()
    assert re.search(r"\(passed \d+ s ago: the step fails at the next sweep\)", waiting_box(html))
    response = staff_client.post(deliver_url(process), {"payload": json.dumps(GOOD), "reason": "late"}, follow=True)

    assert response.redirect_chain == [(detail_url(process), 302)]
    [message] = messages_of(response)
    assert "came too late" in message
    assert [m.level_tag for m in response.context["messages"]] == ["error"]
    fresh = Process.objects.get(pk=process.pk)
    assert fresh.status == "failed" and fresh.failed_reason.startswith("no callback within")
    assert not ProcessStep.objects.filter(process=process, status="callback").exists()
