"""A step that returns again({...}) runs again, each run its own transaction and log row, until it is done."""

from __future__ import annotations

import pytest

from processes.engine_settings import set_engine_paused
from processes.models import Process, ProcessStep
from processes.services import retry_process, start_process
from tests.processes import flows
from tests.processes.conftest import effects, log

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = "Count to five, one per run"


def counted(process: Process) -> list[str]:
    """The runs whose write committed, in order (one effect row per committed run)."""
    return [name.split("-")[0] for name in effects("count") if name.endswith(str(process.process_id))]


def test_a_repeating_step_logs_each_run_and_the_process_moves_on_once_it_is_done():
    process = start_process("t_repeat", by="alice")

    assert process.status == "completed"
    assert log(process) == [("Start", "success"), ("Write A", "success"), *[(COUNT, "success")] * 5,
                            ("Write C", "success"), ("Done", "complete")]
    # Each run's row holds the state after it: the step's cursor, which the next run started from.
    states = [row.state_after() for row in ProcessStep.objects.filter(process=process, name=COUNT).order_by("id")]
    assert [state["counted"] for state in states] == [1, 2, 3, 4, 5]
    assert counted(process) == ["count1", "count2", "count3", "count4", "count5"]
    assert effects(f"c-{process.process_id}") == [f"c-{process.process_id}"]


def test_a_failed_run_rolls_back_alone_and_retry_continues_from_the_last_committed_run():
    flows.CONTROL["fail_at_run"] = 3

    process = start_process("t_repeat")

    assert process.status == "failed"
    assert process.failed_reason == f"{COUNT}: run 3 failed"
    # Runs 1 and 2 committed, each on its own; run 3's write went with its failure.
    assert counted(process) == ["count1", "count2"]
    assert log(process)[-3:] == [(COUNT, "success"), (COUNT, "success"), (COUNT, "failed")]
    failed = ProcessStep.objects.filter(process=process).order_by("id").last()
    assert failed.state_after()["counted"] == 2

    retried = retry_process(process.process_id)

    assert retried.status == "completed"
    assert counted(retried) == ["count1", "count2", "count3", "count4", "count5"]  # none ran twice
    assert [s for n, s in log(retried) if n == COUNT] == ["success"] * 2 + ["failed"] + ["success"] * 3


def test_a_pause_stops_a_repeating_step_between_two_runs_and_resuming_the_engine_continues_it():
    flows.CONTROL["pause_at_run"] = 2  # the engine is paused by run 2, committed with it

    process = start_process("t_repeat")

    assert process.status == "running"
    assert counted(process) == ["count1", "count2"]
    assert log(process)[-1] == (COUNT, "success")

    set_engine_paused(False)

    process.refresh_from_db()
    assert process.status == "completed"
    assert counted(process) == ["count1", "count2", "count3", "count4", "count5"]


@pytest.mark.requires_postgres
def test_an_abort_asked_for_during_a_run_ends_the_process_before_the_next_run(settings):
    settings.ORCHESTRATOR = {"LOCK_WAIT_SECONDS": 0.2}  # the operator's abort finds run 3 holding the row
    flows.CONTROL["abort_at_run"] = 3

    process = start_process("t_repeat")

    assert process.status == "aborted"
    assert process.failed_reason == "aborted by operator: enough counting"
    assert counted(process) == ["count1", "count2", "count3"]  # run 3 finished; run 4 never started
    assert log(process)[-2:] == [(COUNT, "success"), ("Abort", "abort")]
    assert effects(f"c-{process.process_id}") == []
