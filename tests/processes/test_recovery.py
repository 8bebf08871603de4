"""Recovery: a long step counts as running, the sweep resends only what is really lost (with backoff,
counted, bounded), no status is a dead end, bulk starts all run, and one bad process never blocks the rest."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections
from django.db.models import Max, Min
from django.utils import timezone

from processes import leases
from processes.engine import run_process
from processes.engine_settings import engine_status, set_engine_paused
from processes.models import Process, ProcessLease, ProcessStatus, ProcessStep
from processes.recovery import continue_paused_processes, recover_stalled_processes, retry_due_processes
from processes.scheduler import tick
from processes.services import start_process
from subscriptions.models import ResourceType
from tests.processes import flows
from workflows.dsl import StepList, begin
from workflows.registry import get_workflow, unregister, workflow

pytestmark = pytest.mark.django_db(transaction=True)

SUBMITTED: Counter[str] = Counter()


class CountingExecutor:
    """Counts hand-overs and runs nothing: a broker whose workers are all busy (or lost the message)."""

    def submit(self, process_id: object) -> None:
        SUBMITTED[str(process_id)] += 1


@pytest.fixture
def counting(settings):
    SUBMITTED.clear()
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.test_recovery.CountingExecutor", "LEASE_SECONDS": 1.0,
                             "RESEND_AFTER_SECONDS": 60.0, "RESEND_BACKOFF_MAX_SECONDS": 600.0,
                             "RESEND_MAX_TIMES": 3}
    yield SUBMITTED
    settings.ORCHESTRATOR = {}


# --- item 3: proof of life for long steps ----------------------------------------------------------
@pytest.mark.requires_postgres
def test_a_step_longer_than_the_lease_counts_as_running_and_is_never_handed_to_a_second_run(settings, monkeypatch):
    monkeypatch.setenv("ENGINE_TEST_LONG_SECONDS", "8")
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": 0.5}
    process = start_process("t_long")
    pid = process.process_id
    worker = threading.Thread(target=lambda: (run_process(pid), connections.close_all()))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while leases.rows_in_use([pid]) != {str(pid)}:
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.02)
        time.sleep(1.0)  # twice the lease: it lapsed long ago, the step goes on
        assert ProcessLease.objects.get(process_id=pid).expires_at < timezone.now()

        assert engine_status().running_processes == 1
        set_engine_paused(True, by="ops")
        status = engine_status()
        assert (status.status, status.running_processes) == ("pausing", 1)  # not "paused" with 0 running
        set_engine_paused(False, by="ops")  # unpausing hands nothing over: its run is alive
        assert continue_paused_processes() == []
        assert recover_stalled_processes() == []
        assert recover_stalled_processes(now=timezone.now() + timedelta(hours=1)) == []
        asked = time.monotonic()
        run_process(pid)  # a duplicate message: refused (the row is held), returns after LOCK_WAIT_SECONDS
        assert time.monotonic() - asked < 4
        assert ResourceType.objects.filter(resource_type=f"long-{pid}").count() == 0  # still in its step
        assert Process.objects.get(pk=pid).status == "running"
    finally:
        worker.join(timeout=30)
        set_engine_paused(False)

    process = Process.objects.get(pk=pid)
    assert process.status == "completed"
    assert ResourceType.objects.filter(resource_type=f"long-{pid}").count() == 1
    assert ResourceType.objects.filter(resource_type=f"c-{pid}").count() == 1
    assert ProcessStep.objects.filter(process=process, name="Take a long time").count() == 1
    assert engine_status().running_processes == 0


# --- item 4: the sweep resends only what is really lost ----------------------------------------------
def test_queued_processes_are_not_resent_before_their_time_and_then_once_each_with_backoff(counting):
    ids = [str(start_process("t_writes").process_id) for _ in range(300)]
    assert sum(counting.values()) == 300  # the start's own hand-over

    # Counted from the hand-overs themselves: on a loaded machine the 300 starts take seconds, and the first
    # one's minute is up that much before the last one's.
    first, last = (ProcessLease.objects.aggregate(first=Min("queued_at"), last=Max("queued_at")).values())
    for second in range(0, 60, 5):  # a sweep every 5 s for a minute, leases of 1 s: still not lost
        assert recover_stalled_processes(now=first + timedelta(seconds=second), limit=1000) == []
    assert sum(counting.values()) == 300

    now = last
    resent = recover_stalled_processes(now=now + timedelta(seconds=61), limit=1000)
    assert sorted(map(str, resent)) == sorted(ids)
    assert counting == Counter(dict.fromkeys(ids, 2))  # exactly one resend each
    assert recover_stalled_processes(now=now + timedelta(seconds=62), limit=1000) == []  # backoff: 120 s now
    assert set(ProcessLease.objects.values_list("resends", flat=True)) == {1}
    assert len(recover_stalled_processes(now=now + timedelta(seconds=61 + 121), limit=1000)) == 300
    assert set(ProcessLease.objects.values_list("resends", flat=True)) == {2}
    assert Process.objects.filter(status=ProcessStatus.RUNNING).count() == 300


def test_a_process_no_worker_ever_takes_is_failed_after_the_last_resend_saying_so(counting):
    pid = start_process("t_writes").process_id
    now = timezone.now()
    for hours in range(1, 6):
        recover_stalled_processes(now=now + timedelta(hours=hours))

    process = Process.objects.get(pk=pid)
    assert counting[str(pid)] == 1 + 3  # the start and RESEND_MAX_TIMES resends, no more
    assert process.status == "failed"
    assert process.failed_reason.startswith("Write A: no worker took it: handed to the executor 4 times since")
    assert "Check that workers run" in process.failed_reason
    assert not ProcessLease.objects.filter(process_id=pid).exists()


def test_a_claimed_process_whose_worker_died_is_resent_at_once_a_queued_one_is_not(counting):
    claimed, queued = (start_process("t_writes").process_id for _ in range(2))
    # A worker took the first and died: its lease (1 s) lapsed; the second is still in the queue.
    ProcessLease.objects.filter(process_id=claimed).update(owner="dead-worker", expires_at=timezone.now())

    assert recover_stalled_processes(now=timezone.now() + timedelta(seconds=2)) == [claimed]
    record = ProcessLease.objects.get(process_id=claimed)
    assert (record.owner, record.recoveries, record.position) == ("", 1, 1)  # queued again, counted
    assert counting == Counter({str(claimed): 2, str(queued): 1})


@pytest.mark.parametrize("status", ["created", "resumed"])
def test_a_process_left_created_or_resumed_with_no_run_is_picked_up(settings, status):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    pid = start_process("t_writes").process_id
    # As a crash between two writes of an older version could leave it.
    Process.objects.filter(pk=pid).update(status=status, last_modified_at=timezone.now() - timedelta(hours=1))
    ProcessLease.objects.filter(process_id=pid).delete()
    settings.ORCHESTRATOR = {}

    assert recover_stalled_processes() == [pid]

    assert Process.objects.get(pk=pid).status == "completed"
    assert ResourceType.objects.filter(resource_type__endswith=str(pid)).count() == 3


def test_more_than_256_starts_in_one_transaction_all_run_with_the_inline_executor():
    task = start_process("t_many_starts")

    assert task.status == "completed"
    started = Process.objects.filter(workflow__name="t_writes")
    assert started.count() == 300
    assert set(started.values_list("status", flat=True)) == {"completed"}
    assert ResourceType.objects.filter(resource_type__startswith="c-").count() == 300
    assert not ProcessLease.objects.exists()


# --- item 5: one bad process (or task) never blocks the rest -------------------------------------------
def test_a_waiting_process_whose_retry_is_refused_is_failed_with_the_reason_and_the_others_are_retried(
    fast_retries
):
    flows.CONTROL["retry_fail_times"] = 4  # each start fails once, then waits for its automatic retry
    doomed = start_process("t_retry")
    others = [start_process("t_retry") for _ in range(3)]
    assert {p.status for p in [doomed, *others]} == {"waiting"}
    # The doomed one is first in line (earliest due), and its workflow changes incompatibly under it.
    Process.objects.filter(pk=doomed.pk).update(next_retry_at=timezone.now() - timedelta(minutes=1))
    Process.objects.filter(pk=doomed.pk).update(workflow_version=["Start", "Something else", "Done"])

    retried = retry_due_processes(now=timezone.now() + timedelta(seconds=1))

    assert sorted(retried) == sorted(p.pk for p in others)
    assert {Process.objects.get(pk=p.pk).status for p in others} == {"completed"}
    doomed = Process.objects.get(pk=doomed.pk)
    assert doomed.status == "failed"
    assert doomed.failed_reason.startswith("automatic retry not possible: cannot retry process")
    assert "changed since the process started" in doomed.failed_reason
    assert ProcessStep.objects.filter(process=doomed).order_by("-id").first().status == "failed"
    assert retry_due_processes(now=timezone.now() + timedelta(minutes=5)) == []  # nothing blocks the next tick


def test_a_waiting_process_whose_workflow_left_the_code_is_failed_and_the_others_are_retried(fast_retries):
    @workflow("Recovery test: a retry step in a workflow that leaves the code", name="t_leaving")
    def t_leaving() -> StepList:
        return begin >> get_workflow("t_retry").steps[1]

    flows.CONTROL["retry_fail_times"] = 2
    leaving, staying = start_process("t_leaving"), start_process("t_retry")
    assert (leaving.status, staying.status) == ("waiting", "waiting")
    unregister("t_leaving")

    retried = retry_due_processes(now=timezone.now() + timedelta(seconds=1))

    assert retried == [staying.pk]
    leaving = Process.objects.get(pk=leaving.pk)
    assert leaving.status == "failed"
    assert "workflow t_leaving was removed from code" in leaving.failed_reason


def test_an_unexpected_error_retrying_one_process_does_not_stop_the_others(fast_retries, monkeypatch):
    from processes import operations

    flows.CONTROL["retry_fail_times"] = 3
    first, second, third = (start_process("t_retry") for _ in range(3))
    original = operations.retry

    def explode_for_first(process_id, **kwargs):
        if str(process_id) == str(first.pk):
            raise RuntimeError("bug in a hook")
        return original(process_id, **kwargs)

    monkeypatch.setattr(operations, "retry", explode_for_first)
    retried = retry_due_processes(now=timezone.now() + timedelta(seconds=1))

    assert sorted(retried) == sorted([second.pk, third.pk])
    first = Process.objects.get(pk=first.pk)
    assert first.status == "failed" and "bug in a hook" in first.failed_reason


def test_an_unexpected_error_starting_one_scheduled_task_does_not_skip_the_tasks_after_it(
    catalogue, settings, monkeypatch
):
    from processes import scheduler

    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "every 5 minutes",
                                          "task_clean_up_tasks": "every 5 minutes"}}
    original = scheduler.start_process

    def explode_for_check(name, **kwargs):
        if name == "task_check_products":
            raise RuntimeError("bug starting it")
        return original(name, **kwargs)

    monkeypatch.setattr(scheduler, "start_process", explode_for_check)
    report = tick()

    assert len(report.started) == 1
    assert Process.objects.get(pk=report.started[0]).workflow.name == "task_clean_up_tasks"
    assert report.failed == ["start_due_tasks (task_check_products: RuntimeError: bug starting it)"]
    monkeypatch.undo()
    assert len(tick().started) == 1  # the next tick starts the one that failed (same period, not yet run)


def test_the_process_detail_shows_its_run_record_while_it_waits_for_a_worker_and_none_once_done(counting, staff_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_user)
    pid = start_process("t_writes").process_id
    ProcessLease.objects.filter(process_id=pid).update(last_error="could not reach the broker")
    recover_stalled_processes(now=timezone.now() + timedelta(minutes=2))

    run = api.get(f"/api/processes/{pid}/").json()["run"]

    assert (run["state"], run["owner"], run["resends"], run["recoveries"]) == ("queued", "", 1, 0)
    assert run["last_error"] == "could not reach the broker" and run["abort_requested_by"] is None
    run_process(pid)
    assert api.get(f"/api/processes/{pid}/").json()["run"] is None
