"""The process admin: list, read-only detail, and retry / resume / abort / skip / bulk retry through the services."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework import serializers

from processes.models import EngineSettings, InputState, Process, ProcessStep, ProcessSubscription
from processes.services import start_process
from tests.factories import ProcessFactory, SubscriptionFactory, UserFactory
from tests.processes import flows
from tests.processes.conftest import effects, log
from workflows.dsl import State, StepList, begin, inputstep, step
from workflows.registry import get_workflow, task, workflow
from workflows.sync import workflow_row

# The engine-test workflows run after the action's transaction commits: these tests need real commits.
runs = pytest.mark.django_db(transaction=True)


# --- workflows of these tests -------------------------------------------------------------------------
class SizeForm(serializers.Serializer):
    """Checks Django's form cannot make (a serializer's own rule), so the serializer's error must show."""

    size = serializers.IntegerField(min_value=1, max_value=10)

    def validate_size(self, value: int) -> int:
        if value == 7:
            raise serializers.ValidationError("seven is sold out")
        return value


@inputstep("Choose a size", form=SizeForm)
def choose_size() -> State:
    return {"size": 3}


@step("Use the size")
def use_size(size: int) -> State:
    return {"used": size}


@workflow("Admin test: asks for a size")
def t_admin_size() -> StepList:
    return begin >> choose_size >> use_size


@step("Admin test: nothing")
def admin_noop() -> State:
    return {"noop": True}


@task("Admin test: a task")
def t_admin_task() -> StepList:
    return begin >> admin_noop


# --- helpers and fixtures --------------------------------------------------------------------------------
def perm(codename: str) -> Permission:
    return Permission.objects.get(codename=codename, content_type__app_label="processes")


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def runner(db):
    """Staff with the run permission only (no superuser): may see and act on processes."""
    user = UserFactory(username="runner", is_staff=True)
    user.user_permissions.add(perm("run_process"))
    return user


@pytest.fixture
def viewer(db):
    """Staff who may look at processes but not act on them."""
    user = UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(perm("view_process"))
    return user


def detail_url(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def action_url(process: Process, action: str) -> str:
    return reverse(f"admin:processes_process_{action}", args=[process.pk])


def failed_process(by: str = "alice") -> Process:
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by=by)
    assert process.status == "failed"
    return process


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def snapshot(process: Process) -> tuple[Any, ...]:
    fresh = Process.objects.get(pk=process.pk)
    return (fresh.status, fresh.current_step, ProcessStep.objects.filter(process=process).count(),
            InputState.objects.filter(process=process).count())


# --- the detail page -----------------------------------------------------------------------------------
@runs
def test_detail_of_a_failed_process_shows_its_error_diff_pending_steps_inputs_and_buttons(runner):
    process = failed_process()

    response = login(runner).get(detail_url(process))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<span id="process-status" class="status-badge status-failed">failed</span>' in html
    assert re.search(r'class="step-error">RuntimeError: the external system said no<', html)
    assert '<details class="step-traceback"><summary>Traceback</summary>' in html
    # Write A added a_written: an added row in its diff.
    assert re.search(r'<tr class="diff-added">\s*<td class="diff-kind">\+ added</td>\s*<td><strong>a_written', html)
    pending = html[html.index('id="pending-steps"'):html.index('id="process-subscriptions"')]
    assert "Write B then maybe fail (next)" in pending and "Write C" in pending and "Write A" not in pending
    inputs = html[html.index('id="process-inputs"'):]
    assert "initial input" in inputs and "alice" in inputs
    for action in ("retry", "skip", "abort"):
        assert f'id="action-{action}" href="{action_url(process, action)}"' in html
    assert 'id="action-resume"' not in html
    # Read-only: no field to edit, no save button, no delete link.
    form = html.split('id="process_form"')[1].split("</form>")[0]
    assert all('type="hidden"' in tag for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", form))
    assert 'name="_save"' not in html and "deletelink" not in html


@runs
def test_detail_shows_changed_and_removed_keys_and_linked_subscriptions(runner, active_node):
    process = start_process("t_rename_node", subscription_id=active_node.pk, user_input={}, by="alice")
    assert process.status == "completed"
    # A changed and a removed key in a hand-written step of the log, to see both kinds of rows.
    last = ProcessStep.objects.filter(process=process).order_by("-id").first()
    state = dict(last.state_after())
    state.pop("workflow")
    state["created_by"] = "someone else"
    ProcessStep.objects.create(process=process, name="Hand-made", status="success", state=state,
                               created_by="test", started_at=last.started_at, completed_at=last.completed_at)

    html = login(runner).get(detail_url(process)).content.decode()

    assert re.search(r'<tr class="diff-changed">.*?created_by</strong></td>\s*'
                     r'<td>&quot;alice&quot; → &quot;someone else&quot;', html, re.S)
    assert re.search(r'<tr class="diff-removed">.*?<strong>workflow</strong>', html, re.S)
    subscription_url = reverse("admin:subscriptions_subscription_change", args=[active_node.pk])
    section = html[html.index('id="process-subscriptions"'):html.index('id="process-inputs"')]
    assert f'<a href="{subscription_url}">' in section
    assert "None: the process is completed." in html
    assert 'id="action-' not in html  # a completed process allows no action


@runs
def test_viewer_without_run_permission_sees_no_buttons_and_gets_403_on_every_action(viewer):
    process = failed_process()
    client = login(viewer)
    before = snapshot(process)

    html = client.get(detail_url(process)).content.decode()

    assert 'id="process-status"' in html and 'id="action-' not in html
    for action in ("retry", "resume", "abort", "skip"):
        assert client.get(action_url(process, action)).status_code == 403
        assert client.post(action_url(process, action), {"reason": "x"}).status_code == 403
    assert snapshot(process) == before


@runs
def test_non_staff_with_run_permission_is_sent_to_the_login_page(db):
    user = UserFactory(username="outsider")
    user.user_permissions.add(perm("run_process"))
    process = failed_process()

    response = login(user).post(action_url(process, "retry"))

    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Process.objects.get(pk=process.pk).status == "failed"


# --- retry ---------------------------------------------------------------------------------------------
@runs
def test_retry_through_its_confirmation_page_completes_the_process_and_logs_who(runner):
    process = failed_process()
    client = login(runner)

    page = client.get(action_url(process, "retry"))
    assert page.status_code == 200
    html = page.content.decode()
    assert '<button id="confirm" type="submit"' in html and '<ol class="breadcrumbs">' in html
    response = client.post(action_url(process, "retry"), follow=True)

    assert response.redirect_chain == [(detail_url(process), 302)]
    assert messages_of(response) == [f"Retried process {process.process_id}: it is now completed."]
    assert log(process) == [("Start", "success"), ("Write A", "success"), ("Write B then maybe fail", "failed"),
                            ("Write B then maybe fail", "success"), ("Write C", "success"), ("Done", "complete")]
    rows = ProcessStep.objects.filter(process=process).order_by("id")
    assert [row.created_by for row in rows][3:] == ["runner", "runner", "runner"]
    assert rows[3].attempt == 2
    assert '<span id="process-status" class="status-badge status-completed">completed</span>' in \
        response.content.decode()


@runs
def test_retry_of_a_completed_process_is_refused_with_a_message_and_changes_nothing(runner):
    process = start_process("t_writes", by="alice")
    client = login(runner)
    before = snapshot(process)

    assert 'id="action-retry"' not in client.get(detail_url(process)).content.decode()
    shown = client.get(action_url(process, "retry"), follow=True)
    posted = client.post(action_url(process, "retry"), follow=True)

    assert messages_of(shown) == [f"Cannot retry process {process.process_id}: it is completed."]
    assert posted.status_code == 200
    [message] = messages_of(posted)
    assert "cannot retry process" in message and "it is completed" in message
    assert "Traceback" not in posted.content.decode()
    assert snapshot(process) == before


@runs
def test_retry_while_the_engine_is_paused_says_so(runner):
    process = failed_process()
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})
    before = snapshot(process)

    response = login(runner).post(action_url(process, "retry"), follow=True)

    assert "the engine is paused" in messages_of(response)[0]
    assert snapshot(process) == before


# --- resume --------------------------------------------------------------------------------------------
@runs
def test_resume_renders_the_input_form_with_its_initial_value_and_choices(runner):
    process = start_process("t_input", by="alice")
    assert process.status == "suspended"
    client = login(runner)

    detail = client.get(detail_url(process)).content.decode()
    assert f'id="action-resume" href="{action_url(process, "resume")}"' in detail
    html = client.get(action_url(process, "resume")).content.decode()

    assert '<select name="colour"' in html
    assert '<option value="red" selected>' in html and '<option value="green">' in html
    assert "Choose a colour" in html and '<button id="confirm" type="submit"' in html


@runs
def test_resume_with_invalid_input_shows_field_errors_and_changes_nothing_then_valid_input_completes(runner):
    process = start_process("t_input", by="alice")
    client = login(runner)
    before = snapshot(process)

    for bad in ({"colour": "purple"}, {"colour": ""}):
        response = client.post(action_url(process, "resume"), bad)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'class="form-row errors field-colour"' in html and '<ul class="errorlist' in html
        assert snapshot(process) == before

    response = client.post(action_url(process, "resume"), {"colour": "green"}, follow=True)

    assert messages_of(response) == [f"Resumed process {process.process_id}: it is now completed."]
    assert ProcessStep.objects.get(process=process, name="Needs a key").state_after()["seen"] == "green"
    given = InputState.objects.get(process=process, input_type="user_input")
    assert (given.input, given.created_by, given.step_name) == ({"colour": "green"}, "runner", "Choose a colour")


@runs
def test_resume_puts_the_serializers_own_errors_on_the_field(runner):
    process = start_process("t_admin_size", by="alice")
    client = login(runner)
    before = snapshot(process)

    html = client.get(action_url(process, "resume")).content.decode()
    assert re.search(r'<input type="number" name="size" value="3"[^>]*min="1"[^>]*max="10"', html) or \
        re.search(r'<input type="number" name="size" value="3"[^>]*max="10"[^>]*min="1"', html)
    refused = client.post(action_url(process, "resume"), {"size": "7"})

    assert refused.status_code == 200
    assert re.search(r'field-size">\s*<ul class="errorlist"[^>]*><li>seven is sold out</li>', refused.content.decode())
    assert snapshot(process) == before
    done = client.post(action_url(process, "resume"), {"size": "4"}, follow=True)
    assert Process.objects.get(pk=process.pk).status == "completed"
    assert ProcessStep.objects.get(process=process, name="Use the size").state_after()["used"] == 4
    assert "it is now completed" in messages_of(done)[0]


@runs
def test_resume_of_a_process_that_is_not_suspended_is_refused(runner):
    process = failed_process()
    client = login(runner)
    before = snapshot(process)

    shown = client.get(action_url(process, "resume"), follow=True)
    posted = client.post(action_url(process, "resume"), {"colour": "red"}, follow=True)

    assert messages_of(shown) == [f"Cannot resume process {process.process_id}: it is failed."]
    assert "not waiting for input" in messages_of(posted)[0]
    assert snapshot(process) == before


# --- abort ---------------------------------------------------------------------------------------------
@runs
def test_abort_with_a_reason_logs_who_and_why(runner):
    process = start_process("t_input", by="alice")
    client = login(runner)

    html = client.get(action_url(process, "abort")).content.decode()
    assert '<textarea name="reason"' in html
    response = client.post(action_url(process, "abort"), {"reason": "customer cancelled"}, follow=True)

    fresh = Process.objects.get(pk=process.pk)
    assert fresh.status == "aborted"
    row = ProcessStep.objects.filter(process=process).order_by("-id").first()
    assert (row.name, row.status, row.created_by, row.error) == (
        "Abort", "abort", "runner", "aborted by runner: customer cancelled")
    assert messages_of(response) == [
        f"Aborted process {process.process_id}: aborted by runner: customer cancelled."]
    assert 'class="step-note">aborted by runner: customer cancelled<' in response.content.decode()


@runs
def test_abort_without_a_reason_is_allowed_and_abort_of_an_aborted_process_is_refused(runner):
    process = failed_process()
    client = login(runner)

    client.post(action_url(process, "abort"), {"reason": ""}, follow=True)
    assert Process.objects.get(pk=process.pk).failed_reason == "aborted by runner"
    before = snapshot(process)
    again = client.post(action_url(process, "abort"), {"reason": "twice"}, follow=True)

    assert "it is already aborted" in messages_of(again)[0]
    assert snapshot(process) == before


# --- skip ----------------------------------------------------------------------------------------------
@runs
def test_skip_needs_a_reason_then_logs_a_skipped_step_with_who_and_why_and_the_process_completes(runner):
    process = failed_process()
    client = login(runner)
    before = snapshot(process)

    assert 'Step to skip: <strong>Write B then maybe fail</strong>' in client.get(
        action_url(process, "skip")).content.decode()
    for blank in ({}, {"reason": "   "}):
        response = client.post(action_url(process, "skip"), blank)
        assert response.status_code == 200
        assert 'class="form-row errors field-reason"' in response.content.decode()
        assert snapshot(process) == before

    response = client.post(action_url(process, "skip"), {"reason": "done by hand in the CRM"}, follow=True)

    assert messages_of(response) == [
        f"Skipped step 'Write B then maybe fail' of process {process.process_id}: it is now completed."]
    assert log(process) == [("Start", "success"), ("Write A", "success"), ("Write B then maybe fail", "failed"),
                            ("Write B then maybe fail", "skipped"), ("Write C", "success"), ("Done", "complete")]
    skipped = ProcessStep.objects.get(process=process, status="skipped")
    assert (skipped.created_by, skipped.error) == ("runner", "skipped by runner: done by hand in the CRM")
    assert skipped.state_after() == ProcessStep.objects.get(process=process, name="Write A").state_after()
    # Write C ran without b_written in the state (the skipped step added nothing).
    assert ProcessStep.objects.get(process=process, name="Write C").state_after()["c_written"] is False
    assert effects(f"c-{process.process_id}") == [f"c-{process.process_id}"]
    assert 'class="step-note">skipped by runner: done by hand in the CRM<' in response.content.decode()


@runs
def test_skip_is_refused_for_a_suspended_process_and_while_the_engine_is_paused(runner):
    suspended = start_process("t_input", by="alice")
    failed = failed_process()
    client = login(runner)

    assert 'id="action-skip"' not in client.get(detail_url(suspended)).content.decode()
    refused = client.post(action_url(suspended, "skip"), {"reason": "why not"}, follow=True)
    assert "cannot skip a step of process" in messages_of(refused)[0]
    assert Process.objects.get(pk=suspended.pk).status == "suspended"

    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})
    before = snapshot(failed)
    paused = client.post(action_url(failed, "skip"), {"reason": "why not"}, follow=True)
    assert "the engine is paused" in messages_of(paused)[0]
    assert snapshot(failed) == before


# --- the list ------------------------------------------------------------------------------------------
@runs
def test_list_shows_status_counts_and_filters_and_searches(runner, active_node):
    failed = failed_process()
    suspended = start_process("t_input", by="bob")
    on_node = start_process("t_rename_node", subscription_id=active_node.pk, user_input={}, by="alice")
    client = login(runner)
    url = reverse("admin:processes_process_changelist")

    html = client.get(url).content.decode()
    assert re.search(r'id="status-count-failed" href="\?status__exact=failed"\s*class="attention failed">\s*'
                     r'failed: 1</a>', html)
    assert re.search(r'id="status-count-completed"[^>]*>\s*completed: 1</a>', html)
    assert "all: 3" in html
    assert '<span class="status-badge"' in html and "the external system said no" in html
    sub_url = reverse("admin:subscriptions_subscription_change", args=[active_node.pk])
    # The subscription by its description (its id on hover), then its customer.
    assert re.search(rf'<a href="{sub_url}" title="Node rtr-1 \({active_node.pk}\)">Node rtr-1</a> '
                     r'<span class="process-customer" title="customer-1">customer-1</span>', html)

    def found(**params: str) -> set[Process]:
        response = client.get(url, params)
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert found(status__exact="failed") == {failed.pk}
    assert found(workflow__target__exact="modify") == {on_node.pk}
    assert found(created_by__exact="bob") == {suspended.pk}
    assert found(is_task__exact="0") == {failed.pk, suspended.pk, on_node.pk}
    assert found(q=str(failed.pk)) == {failed.pk}
    assert found(q=str(failed.pk)[:8]) == {failed.pk}
    assert found(q=str(active_node.pk)) == {on_node.pk}
    assert found(q=str(active_node.pk)[:13]) == {on_node.pk}
    assert found(q="customer-1") == {on_node.pk}
    assert found(q="t_input") == {suspended.pk}


def _processes(count: int, workflow: Any, subscriptions: list[Any]) -> None:
    statuses = ["failed", "completed", "waiting", "suspended"]
    made = Process.objects.bulk_create(
        ProcessFactory.build(workflow=workflow, status=statuses[n % 4], failed_reason="x" * 100,
                             created_by=f"user{n % 3}") for n in range(count)
    )
    ProcessSubscription.objects.bulk_create(
        ProcessSubscription(process=process, subscription=subscriptions[n % len(subscriptions)])
        for n, process in enumerate(made)
    )


@pytest.mark.django_db
def test_the_list_takes_the_same_number_of_queries_for_20_and_for_200_processes(runner):
    workflow = workflow_row(get_workflow("t_writes"))
    subscriptions = SubscriptionFactory.create_batch(3)
    client = login(runner)
    url = reverse("admin:processes_process_changelist")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200
        return len(captured)

    _processes(20, workflow, subscriptions)
    with_20 = queries()
    _processes(180, workflow, subscriptions)
    with_200 = queries()

    assert with_20 == with_200
    assert with_200 <= 15


@pytest.mark.django_db
def test_the_list_reads_no_whole_table_for_its_filters_counts_or_pages(runner, settings):
    settings.ORCHESTRATOR = {"LIST_COUNT_LIMIT": 30}
    workflow = workflow_row(get_workflow("t_writes"))
    _processes(120, workflow, SubscriptionFactory.create_batch(2))
    client = login(runner)
    url = reverse("admin:processes_process_changelist")

    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    # The count stops at the limit and says so; the pages still go on, and each status count is exact.
    assert re.search(r'id="result-count">\s*more than 30 processes', html), html[-2000:]
    assert response.context["cl"].paginator.num_pages == 1 + 30 // 50
    assert re.search(r'id="status-count-failed"[^>]*>\s*failed: 30</a>', html)
    # Who started them: every name, from the index, for the created-by filter.
    created_by = next(spec for spec in response.context["cl"].filter_specs if spec.title == "created by")
    assert [choice["display"] for choice in created_by.choices(response.context["cl"])][1:] == [
        "user0", "user1", "user2"]
    if connection.vendor == "postgresql":  # SQLite has no triggers and no loose index scans: it reads them
        table = re.compile(rf'\b"?{Process._meta.db_table}"?(\s|$|\.)')
        reads = [q["sql"] for q in captured if table.search(q["sql"])]
        assert not any("DISTINCT" in sql or "GROUP BY" in sql for sql in reads), reads
        assert all("LIMIT" in sql for sql in reads if "COUNT(" in sql), reads


@pytest.mark.django_db
def test_a_created_by_filter_for_a_name_past_the_listed_ones_still_filters_and_shows_it(runner, monkeypatch):
    from processes import admin_filters

    monkeypatch.setattr(admin_filters, "MAX_CREATORS", 2)
    workflow = workflow_row(get_workflow("t_writes"))
    _processes(9, workflow, SubscriptionFactory.create_batch(1))
    assert admin_filters.creators() == ["user0", "user1"]
    client = login(runner)

    response = client.get(reverse("admin:processes_process_changelist"), {"created_by__exact": "user2"})

    cl = response.context["cl"]
    assert {row.created_by for row in cl.result_list} == {"user2"} and len(cl.result_list) == 3
    created_by = next(spec for spec in cl.filter_specs if spec.title == "created by")
    choices = list(created_by.choices(cl))
    assert [c["display"] for c in choices][1:] == ["user0", "user1", "user2"]
    assert [c["display"] for c in choices if c["selected"]] == ["user2"]


# --- deletion: tasks only ------------------------------------------------------------------------------
@runs
def test_only_a_finished_task_can_be_deleted_and_through_delete_task(staff_user, runner):
    process = failed_process()
    finished_task = start_process("t_admin_task", by="alice")
    assert finished_task.status == "completed"
    client = login(staff_user)

    assert client.get(reverse("admin:processes_process_delete", args=[process.pk])).status_code == 403
    assert "deletelink" in client.get(detail_url(finished_task)).content.decode()
    response = client.post(reverse("admin:processes_process_delete", args=[finished_task.pk]), {"post": "yes"})

    assert response.status_code == 302

    assert not Process.objects.filter(pk=finished_task.pk).exists()
    assert Process.objects.filter(pk=process.pk).exists()
    # Delete needs its own permission: the run permission is not enough.
    assert login(runner).get(reverse("admin:processes_process_delete", args=[process.pk])).status_code == 403
