"""Step groups: several steps shown and logged as one row, each sub-step still its own transaction; a failure
fails the group and a retry starts it again at its first sub-step; input, callback and timer sub-steps wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from processes import statelog
from processes.callbacks import deliver
from processes.engine_settings import set_engine_paused
from processes.models import (
    CallbackToken,
    InputState,
    Process,
    ProcessGroupProgress,
    ProcessLease,
    ProcessStep,
)
from processes.operations import pending_form
from processes.recovery import recover_stalled_processes, retry_due_processes
from processes.scheduler import tick
from processes.services import abort_process, resume_process, retry_process, skip_step, start_process
from tests.processes import flows, group_flows
from tests.processes.conftest import effects, log
from tests.processes.test_engine_crash import database_url, kill_when_inside
from tests.processes.wait_flows import FakeSystem
from workflows.dsl import begin

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
GROUP = "Configure the switch"
GOOD = {"ok": True, "device": "rtr-1"}


@pytest.fixture(autouse=True)
def reset_group_control():
    group_flows.GROUP_CONTROL.update(dict.fromkeys(group_flows.GROUP_CONTROL, 0))
    yield
    group_flows.GROUP_CONTROL.update(dict.fromkeys(group_flows.GROUP_CONTROL, 0))


def ran(what: str, process: Process) -> int:
    """How often a sub-step's work committed (one effect row per committed run)."""
    return len(effects(f"{what}-{process.process_id}"))


def row(process: Process, name: str, status: str = "success") -> ProcessStep:
    return ProcessStep.objects.get(process=process, name=name, status=status)


def post(url: str, body: object) -> int:
    return APIClient().post(FakeSystem.path(url), body, format="json").status_code


# --- one unit in the log --------------------------------------------------------------------------------
def test_a_group_of_three_sub_steps_writes_one_log_row_holding_the_state_after_its_last_sub_step():
    process = start_process("t_group", by="alice")

    assert process.status == "completed"
    assert log(process) == [("Start", "success"), ("Write A", "success"), (GROUP, "success"),
                            ("Write C", "success"), ("Done", "complete")]
    # Every sub-step's own database writes committed, once each.
    assert (ran("g1", process), ran("g2", process), ran("g3", process)) == (1, 1, 1)
    group_row = row(process, GROUP)
    after = group_row.state_after()
    assert (after["g1"], after["g2"], after["g3"]) == (1, 2, 3)
    assert "scratch" not in after  # added by G2, removed by G3: the group's row shows neither
    assert group_row.delta == {"added": {"g1": 1, "g2": 2, "g3": 3}, "changed": {}, "removed": []}
    assert statelog.rebuild(process)[0] == after | {"c_written": False}
    assert not ProcessGroupProgress.objects.exists()
    assert process.last_step == "Done"


def test_each_sub_step_commits_on_its_own_and_a_run_stopped_between_two_goes_on_at_the_next():
    group_flows.GROUP_CONTROL["pause_in_g1"] = 1

    process = start_process("t_group", by="alice")

    # The pause committed with G1; the run stopped at the boundary before G2.
    assert process.status == "running"
    assert log(process)[-1] == ("Write A", "success")  # no row for the group yet
    progress = ProcessGroupProgress.objects.get(process=process)
    assert (progress.position, progress.sub_step) == (2, 1)
    assert progress.state["g1"] == 1 and progress.state["a_written"] is True
    assert process.last_step == f"{GROUP} \u203a Write G1"
    assert (ran("g1", process), ran("g2", process)) == (1, 0)

    set_engine_paused(False, by="bob")

    process.refresh_from_db()
    assert process.status == "completed"
    assert (ran("g1", process), ran("g2", process), ran("g3", process)) == (1, 1, 1)
    assert [name for name, _ in log(process)].count(GROUP) == 1
    assert row(process, GROUP).state_after()["g3"] == 3
    assert not ProcessGroupProgress.objects.exists()


# --- failure, retry, skip, abort ------------------------------------------------------------------------
def test_a_failed_sub_step_fails_the_group_naming_it_and_a_retry_runs_the_group_again_from_its_first():
    group_flows.GROUP_CONTROL["g2_fail_times"] = 1

    process = start_process("t_group", by="alice")

    assert process.status == "failed"
    failed_name = f"{GROUP} \u203a Write G2 then maybe fail"
    assert process.failed_reason == f"{failed_name}: the switch refused the VLAN"
    assert process.last_step == failed_name
    assert log(process)[-1] == (failed_name, "failed")
    failed = row(process, failed_name, "failed")
    assert failed.error_type == "RuntimeError"
    # The state on the failed row is the state before the group: what G1 returned is not in it.
    assert failed.state == row(process, "Write A").state_after()
    assert "g1" not in failed.state
    assert (ran("g1", process), ran("g2", process)) == (1, 0)  # G1 committed; G2's write rolled back
    assert not ProcessGroupProgress.objects.exists()

    retried = retry_process(process.process_id, by="bob")

    assert retried.status == "completed"
    assert (ran("g1", process), ran("g2", process), ran("g3", process)) == (2, 1, 1)  # G1 ran again
    assert log(retried) == [("Start", "success"), ("Write A", "success"), (failed_name, "failed"),
                            (GROUP, "success"), ("Write C", "success"), ("Done", "complete")]
    assert row(retried, GROUP).state_after()["g3"] == 3


def test_a_failing_retry_sub_step_waits_and_its_automatic_retry_restarts_the_group_at_its_first_sub_step(
        fast_retries):
    group_flows.GROUP_CONTROL["flaky_fail_times"] = 1

    process = start_process("t_group_retry", by="alice")

    assert process.status == "waiting"
    reason = process.failed_reason
    assert reason.startswith("Provision the port \u203a Call a flaky controller: controller unreachable (try 1 of 3")
    assert log(process)[-1] == ("Provision the port \u203a Call a flaky controller", "waiting")
    assert not ProcessGroupProgress.objects.exists()

    assert retry_due_processes() == [process.process_id]

    process.refresh_from_db()
    assert process.status == "completed"
    assert (ran("g1", process), ran("flaky", process), ran("g3", process)) == (2, 1, 1)
    assert row(process, "Provision the port").state_after()["flaky_ok"] is True


def test_a_retry_sub_step_that_keeps_failing_counts_its_tries_across_restarts_of_the_group(fast_retries):
    group_flows.GROUP_CONTROL["flaky_fail_times"] = 10

    process = start_process("t_group_retry")
    retry_due_processes()
    retry_due_processes()

    process.refresh_from_db()
    assert process.status == "failed"
    assert "gave up after 3 tries" in process.failed_reason
    tries = list(ProcessStep.objects.filter(process=process, name="Provision the port \u203a Call a flaky controller")
                 .order_by("id").values_list("status", "attempt"))
    assert tries == [("waiting", 1), ("waiting", 2), ("failed", 3)]
    assert ran("g1", process) == 3


def test_skip_of_a_failed_group_skips_the_whole_group():
    group_flows.GROUP_CONTROL["g2_fail_times"] = 1
    process = start_process("t_group")

    skipped = skip_step(process.process_id, by="bob", reason="configured by hand on the console")

    assert skipped.status == "completed"
    assert log(skipped)[-4:] == [(f"{GROUP} \u203a Write G2 then maybe fail", "failed"), (GROUP, "skipped"),
                                 ("Write C", "success"), ("Done", "complete")]
    assert row(skipped, GROUP, "skipped").error == "skipped by bob: configured by hand on the console"
    assert ran("g3", skipped) == 0
    assert "g1" not in statelog.rebuild(skipped)[0]
    assert not ProcessGroupProgress.objects.exists()


def test_a_conditional_group_whose_condition_is_false_is_skipped_as_one_row():
    process = start_process("t_group_conditional")

    assert process.status == "completed"
    assert log(process) == [("Start", "success"), ("Decide whether to configure", "success"), (GROUP, "skipped"),
                            ("Write C", "success"), ("Done", "complete")]
    assert (ran("g1", process), ran("g2", process), ran("g3", process)) == (0, 0, 0)


def test_a_conditional_group_whose_condition_is_true_runs_all_its_sub_steps():
    group_flows.GROUP_CONTROL["wanted"] = 1
    process = start_process("t_group_conditional")

    assert process.status == "completed"
    assert (ran("g1", process), ran("g2", process), ran("g3", process)) == (1, 1, 1)
    assert (GROUP, "success") in log(process)


def test_a_sub_step_that_asks_to_run_again_fails_the_group_saying_why():
    process = start_process("t_group_again")

    assert process.status == "failed"
    assert process.failed_reason.startswith("Count in a group \u203a Count again: step 'Count again' in the step group "
                                            "'Count in a group' returned again(...)")
    assert ran("g1", process) == 1  # G1 committed before; the failure rolled back only the failing sub-step
    assert not ProcessGroupProgress.objects.exists()


# --- a worker killed between two sub-steps ---------------------------------------------------------------
WORKER = """
import django, sys
django.setup()
import tests.processes.flows, tests.processes.group_flows  # the test workflows
from processes.engine import run_process
run_process(sys.argv[1])
"""


@pytest.mark.requires_postgres
def test_a_worker_killed_after_the_first_sub_step_committed_is_recovered_at_the_second_and_runs_none_twice(
        settings, tmp_path):
    lease = 2.0
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": lease}
    process = start_process("t_group_killable", by="alice")
    pid = str(process.process_id)
    hang, inside = tmp_path / f"{pid}.hang", tmp_path / f"{pid}.inside"
    hang.touch()
    env = {**os.environ, "DATABASE_URL": database_url(), "ENGINE_TEST_DIR": str(tmp_path),
           "ORCHESTRATOR_LEASE_SECONDS": str(lease), "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, pid], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # SIGKILL inside the second sub-step: the first committed, the second's write is not.
    kill_when_inside(worker, inside, "the second sub-step")

    process.refresh_from_db()
    assert process.status == "running"
    assert log(process) == [("Start", "success")]  # no row for the group while it runs
    progress = ProcessGroupProgress.objects.get(process=process)
    assert (progress.position, progress.sub_step, progress.state["g1"]) == (1, 1, 1)
    assert (ran("g1", process), ran("hang", process)) == (1, 0)

    hang.unlink()
    settings.ORCHESTRATOR = {"LEASE_SECONDS": lease}  # the recovered run runs here, inline
    # The sweep, once the dead worker's lease lapsed, hands the process to a new run: at a tick after the
    # server noticed the closed connection and let go of its row lock (until then a step is in progress).
    deadline = time.monotonic() + 15
    while not (recovered := recover_stalled_processes(now=timezone.now() + timedelta(minutes=5))):
        assert time.monotonic() < deadline, "the dead worker's row lock was never let go"
        time.sleep(0.2)
    assert recovered == [process.process_id]

    process.refresh_from_db()
    assert process.status == "completed", process.failed_reason
    assert (ran("g1", process), ran("hang", process), ran("g3", process), ran("c", process)) == (1, 1, 1, 1)
    assert log(process) == [("Start", "success"), ("Hang in the group", "success"), ("Write C", "success"),
                            ("Done", "complete")]
    assert row(process, "Hang in the group").state_after()["hung"] is True
    assert not ProcessGroupProgress.objects.exists()


# --- an input step inside a group ------------------------------------------------------------------------
def test_an_input_step_in_a_group_suspends_shows_its_form_and_resume_goes_on_with_the_next_sub_step(api):
    process = start_process("t_group_input", by="alice")

    assert process.status == "suspended"
    assert process.last_step == "Paint \u203a Choose a colour"
    assert log(process)[-1] == ("Paint \u203a Choose a colour", "suspend")
    # The log keeps the state before the group: G1's result is in the group's progress, not in the log.
    assert "g1" not in row(process, "Paint \u203a Choose a colour", "suspend").state_after()
    assert not ProcessLease.objects.filter(process=process).exists()
    form = pending_form(process)
    assert form["step"] == "Paint \u203a Choose a colour"
    assert form["initial"] == {"colour": "red"}
    assert set(form["schema"]["properties"]) == {"colour"}
    assert api.get(f"/api/processes/{process.process_id}/").json()["form"]["step"] == "Paint \u203a Choose a colour"

    resumed = resume_process(process.process_id, {"colour": "green"}, by="bob")

    assert resumed.status == "completed"
    assert ran("g1", resumed) == 1  # not run again by the resume
    assert log(resumed) == [("Start", "success"), ("Paint \u203a Choose a colour", "suspend"), ("Paint", "success"),
                            ("Needs a key", "success"), ("Done", "complete")]
    group_row = row(resumed, "Paint")
    assert group_row.delta["added"] == {"g1": 1, "colour": "green", "painted": "green after g1"}
    assert row(resumed, "Needs a key").state_after()["seen"] == "green"
    given = InputState.objects.get(process=process, input_type="user_input")
    assert (given.input, given.created_by) == ({"colour": "green"}, "bob")
    assert given.step_name == "Paint \u203a Choose a colour"


def test_an_input_step_last_in_a_group_ends_the_group_with_the_input_in_its_row():
    process = start_process("t_group_input_last")

    resumed = resume_process(process.process_id, {"colour": "red"}, by="bob")

    assert resumed.status == "completed"
    assert row(resumed, "Ask last").state_after()["colour"] == "red"
    assert row(resumed, "Needs a key").state_after()["seen"] == "red"


def test_the_admin_resume_page_of_a_process_suspended_in_a_group_shows_the_sub_steps_form(staff_client):
    process = start_process("t_group_input")

    html = staff_client.get(f"/admin/processes/process/{process.pk}/resume/").content.decode()

    assert '<select name="colour"' in html and "Paint \u203a Choose a colour" in html
    staff_client.post(f"/admin/processes/process/{process.pk}/resume/", {"colour": "green"})
    process.refresh_from_db()
    assert process.status == "completed"


def test_invalid_input_to_a_group_changes_nothing_and_abort_while_suspended_leaves_no_progress():
    from orchestrator_site.errors import InvalidInput

    process = start_process("t_group_input")
    before = ProcessGroupProgress.objects.get(process=process)
    with pytest.raises(InvalidInput):
        resume_process(process.process_id, {"colour": "purple"}, by="bob")
    after = ProcessGroupProgress.objects.get(process=process)
    assert (after.sub_step, after.state) == (before.sub_step, before.state)

    aborted = abort_process(process.process_id, by="bob", reason="wrong switch")

    assert aborted.status == "aborted"
    assert not ProcessGroupProgress.objects.exists()
    assert log(aborted)[-1] == ("Abort", "abort")


# --- a callback step inside a group ---------------------------------------------------------------------
def test_a_callback_step_in_a_group_awaits_and_its_answer_is_validated_and_the_group_completes(fake_system, api):
    process = start_process("t_group_callback", by="alice")

    assert process.status == "awaiting_callback"
    label = "Deploy in a group \u203a Deploy config"
    assert log(process)[-1] == (label, "awaiting_callback")
    token = CallbackToken.objects.get(process=process)
    assert (token.position, token.sub_step, token.step_name) == (1, 1, label)
    assert api.get(f"/api/processes/{process.process_id}/").json()["waiting_for"]["step"] == label

    assert post(fake_system.last("deploy")["url"], GOOD) == 200

    process.refresh_from_db()
    assert process.status == "completed"
    assert log(process) == [("Start", "success"), (label, "awaiting_callback"), (label, "callback"),
                            ("Deploy in a group", "success"), ("Write C", "success"), ("Done", "complete")]
    after = row(process, "Deploy in a group").state_after()
    assert (after["deploy_result"], after["deployed_on"], after["deploy_requested"], after["g3"]) == (
        GOOD, "rtr-1", True, 1)
    assert (ran("g1", process), ran("g3", process), len(effects(f"deploy-{process.process_id}"))) == (1, 1, 1)
    assert CallbackToken.objects.get(process=process).fate == "received and validated"
    assert not ProcessGroupProgress.objects.exists()


def test_a_callback_in_a_group_delivered_by_hand_goes_on_and_a_refused_answer_restarts_the_group(fake_system):
    process = start_process("t_group_callback")
    label = "Deploy in a group \u203a Deploy config"

    deliver(process.process_id, None, {"ok": False, "error": "no route"}, by="dave", reason="the NOC phoned")

    process.refresh_from_db()
    assert process.status == "failed"
    assert process.failed_reason == f"{label}: the device refused the configuration: no route"
    assert row(process, label, "callback").error == "delivered by hand by dave: the NOC phoned"
    assert not ProcessGroupProgress.objects.exists()

    retry_process(process.process_id, by="dave")  # the group again: G1, then the action with a new token

    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    assert ran("g1", process) == 2 and len(effects(f"deploy-{process.process_id}")) == 2
    assert CallbackToken.objects.filter(process=process, closed_at__isnull=True).count() == 1
    deliver(process.process_id, None, GOOD, by="dave", reason="confirmed on the console")

    process.refresh_from_db()
    assert process.status == "completed"
    assert row(process, "Deploy in a group").state_after()["deployed_on"] == "rtr-1"


# --- a timer inside a group ------------------------------------------------------------------------------
def test_a_timer_in_a_group_waits_and_the_sweep_wakes_the_group_at_its_next_sub_step():
    process = start_process("t_group_timer")

    assert process.status == "waiting" and process.failed_reason == ""
    assert log(process)[-1] == ("Wait in a group \u203a Wait 5 min", "waiting")
    assert ProcessGroupProgress.objects.get(process=process).sub_step == 2
    assert tick(now=process.next_retry_at - timedelta(seconds=1)).woken == []

    assert tick(now=process.next_retry_at).woken == [process.process_id]

    process.refresh_from_db()
    assert process.status == "completed"
    assert (ran("g1", process), ran("g3", process)) == (1, 1)
    assert [name for name, _ in log(process)].count("Wait in a group") == 1


def test_a_timer_last_in_a_group_ends_the_group_when_it_is_woken():
    process = start_process("t_group_timer_last")
    assert process.status == "waiting"

    tick(now=process.next_retry_at)

    process.refresh_from_db()
    assert process.status == "completed"
    assert log(process)[-3:] == [("Wait last", "success"), ("Write C", "success"), ("Done", "complete")]
    assert row(process, "Wait last").state_after()["g1"] == 1


# --- where the group's sub-steps show --------------------------------------------------------------------
def test_the_workflow_api_lists_a_groups_sub_steps_under_its_one_step(api):
    body = api.get("/api/workflows/t_group/").json()

    assert body["steps"] == ["Start", "Write A", GROUP, "Write C", "Done"]
    assert body["step_groups"] == {GROUP: ["Write G1", "Write G2 then maybe fail", "Write G3"]}


def test_list_workflows_shows_a_groups_sub_steps_under_it():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("list_workflows", "--steps", stdout=out)

    lines = out.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == f"3. {GROUP} (group)")
    assert [line.strip() for line in lines[at + 1:at + 4]] == [
        "a. Write G1 (step)", "b. Write G2 then maybe fail (step)", "c. Write G3 (step)"]


def test_a_callback_in_a_group_that_never_comes_fails_the_group_naming_its_sub_step(fake_system):
    process = start_process("t_group_callback")
    deadline = process.next_retry_at

    tick(now=deadline + timedelta(seconds=1))

    process.refresh_from_db()
    assert process.status == "failed"
    assert process.failed_reason.startswith("no callback within 10 min")
    assert log(process)[-1] == ("Deploy in a group \u203a Deploy config", "failed")
    assert not ProcessGroupProgress.objects.exists()
    assert "g1" not in statelog.rebuild(process)[0]  # a retry starts from the state before the group


def test_retry_of_a_group_waiting_for_its_timer_wakes_it_and_the_group_goes_on_without_running_again():
    process = start_process("t_group_timer")

    retried = retry_process(process.process_id, by="bob")

    assert retried.status == "completed"
    assert (ran("g1", retried), ran("g3", retried)) == (1, 1)  # a wait is no failure: the group is not restarted
    assert row(retried, "Wait in a group").state_after()["g3"] == 1


# --- the code of a group changed while a process was inside it ------------------------------------------
def test_a_process_stopped_inside_a_group_whose_sub_steps_changed_fails_saying_so_and_a_retry_restarts_it():
    from tests.processes.test_engine_contract import replaced_workflow
    from workflows.dsl import step_group

    group_flows.GROUP_CONTROL["pause_in_g1"] = 1
    process = start_process("t_group", by="alice")
    assert ProcessGroupProgress.objects.get(process=process).sub_step == 1  # between G1 and G2
    # A deploy while it waits: G2 is gone, so the next sub-step would be G3 with no G2 before it.
    changed = step_group(GROUP, group_flows.write_g1 >> group_flows.write_g3)
    with replaced_workflow("t_group", lambda: begin >> flows.write_a >> changed >> flows.write_c):
        set_engine_paused(False, by="bob")

        process.refresh_from_db()
        assert process.status == "failed"
        assert (f"in the step group {GROUP!r}, sub-step 2 was 'Write G2 then maybe fail', is now 'Write G3'; "
                f"a retry starts the group again at its first sub-step") in process.failed_reason
        assert (ran("g2", process), ran("g3", process)) == (0, 0)  # nothing ran at the wrong sub-step
        assert not ProcessGroupProgress.objects.filter(process=process).exists()

        retried = retry_process(process.process_id, by="bob")

    assert retried.status == "completed"
    assert (ran("g1", retried), ran("g2", retried), ran("g3", retried)) == (2, 0, 1)
    assert row(retried, GROUP).state_after()["g3"] == 1  # G3 after G1 only, as the new code says


def test_resume_inside_a_group_whose_sub_steps_changed_before_the_input_is_refused_and_after_it_goes_on():
    from processes.errors import IncompatibleWorkflowChange
    from tests.processes.test_engine_contract import replaced_workflow
    from workflows.dsl import step_group

    process = start_process("t_group_input", by="alice")
    assert process.status == "suspended"
    g1, colour, use = group_flows.write_g1, flows.choose_colour, group_flows.use_colour

    added_before = step_group("Paint", g1 >> group_flows.write_g2 >> colour >> use)
    with replaced_workflow("t_group_input", lambda: begin >> added_before >> flows.needs_key):
        with pytest.raises(IncompatibleWorkflowChange, match="in the step group 'Paint', sub-step 2 was 'Choose a "
                                                             "colour', is now 'Write G2 then maybe fail'"):
            resume_process(process.process_id, {"colour": "green"}, by="bob")
        assert pending_form(Process.objects.get(pk=process.pk)) is None  # no form to fill in for the wrong step
    process.refresh_from_db()
    assert process.status == "suspended"
    assert not InputState.objects.filter(process=process, input_type="user_input").exists()

    added_after = step_group("Paint", g1 >> colour >> use >> group_flows.write_g3)
    with replaced_workflow("t_group_input", lambda: begin >> added_after >> flows.needs_key):
        resumed = resume_process(process.process_id, {"colour": "green"}, by="bob")

    assert resumed.status == "completed"
    assert (ran("g1", resumed), ran("g3", resumed)) == (1, 1)
    assert row(resumed, "Paint").state_after()["painted"] == "green after g1"
