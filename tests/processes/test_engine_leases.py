"""Leases: one run per process, recovery of a process whose run died, and pause/resume at step boundaries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from processes.engine import run_process
from processes.engine_settings import engine_status, set_engine_paused
from processes.models import Process, ProcessLease, ProcessStep
from processes.recovery import recover_stalled_processes
from processes.services import start_process
from tests.processes.conftest import effects, log

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deferred(settings):
    """Start processes without running them, as if their message were still on its way to a worker."""
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    yield
    settings.ORCHESTRATOR = {}


def test_a_completed_run_leaves_no_lease():
    process = start_process("t_writes")

    assert process.status == "completed"
    assert not ProcessLease.objects.exists()


def test_a_message_delivered_twice_runs_the_process_once(deferred, settings):
    process = start_process("t_writes")
    pid = process.process_id
    # The first delivery's run holds the process (as a live worker in the middle of it would).
    ProcessLease.objects.filter(process=process).update(owner="first-worker",
                                                         expires_at=timezone.now() + timedelta(minutes=5))
    settings.ORCHESTRATOR = {}

    run_process(pid)  # the second delivery

    assert log(process) == [("Start", "success")]  # it ran nothing
    assert ProcessLease.objects.get(process=process).owner == "first-worker"

    ProcessLease.objects.filter(process=process).delete()  # the first run ends
    run_process(pid)
    run_process(pid)  # and a late third delivery finds nothing left to do

    assert [name for name, _ in log(process)] == ["Start", "Write A", "Write B then maybe fail", "Write C", "Done"]
    assert effects(f"a-{pid}") == [f"a-{pid}"]


def test_a_process_whose_run_died_is_recovered_once_its_lease_lapses(deferred, settings):
    process = start_process("t_writes")
    # A worker claimed it and died: its lease is still there, running out.
    ProcessLease.objects.filter(process=process).update(owner="dead-worker",
                                                         expires_at=timezone.now() + timedelta(seconds=60))
    Process.objects.filter(pk=process.pk).update(last_modified_at=timezone.now() - timedelta(hours=1))
    settings.ORCHESTRATOR = {}

    assert recover_stalled_processes() == []  # the lease still holds: its worker may be alive
    ProcessLease.objects.filter(process=process).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert recover_stalled_processes() == [process.process_id]

    process.refresh_from_db()
    assert process.status == "completed"
    assert ProcessStep.objects.filter(process=process, name="Write A").count() == 1
    assert not ProcessLease.objects.exists()


def test_a_process_just_created_is_left_to_the_worker_its_message_goes_to(deferred):
    process = start_process("t_writes")

    assert recover_stalled_processes() == []
    assert Process.objects.get(pk=process.pk).status == "running"


def test_pause_stops_a_process_at_a_step_boundary_and_resuming_the_engine_continues_it():
    process = start_process("t_paused_midway", by="alice")

    # The step that paused the engine finished; the next one did not start.
    assert process.status == "running"
    assert log(process)[-1] == ("Pause the engine", "success")
    assert effects(f"c-{process.process_id}") == []
    status = engine_status()
    assert (status.paused, status.status, status.running_processes) == (True, "paused", 0)
    assert recover_stalled_processes(now=timezone.now() + timedelta(days=1)) == []  # paused: nothing moves

    set_engine_paused(False, by="bob")

    process.refresh_from_db()
    assert process.status == "completed"
    assert effects(f"c-{process.process_id}") == [f"c-{process.process_id}"]


@pytest.mark.requires_postgres
def test_pause_with_processes_running_stops_them_at_a_step_boundary_and_unpause_completes_them(settings):
    import time as clock

    from processes.errors import EnginePaused
    from processes.executors import threadpool

    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 4}

    def wait_for(condition, what: str, timeout: float = 30) -> None:
        deadline = clock.monotonic() + timeout
        while not condition():
            assert clock.monotonic() < deadline, f"timed out waiting for {what}"
            clock.sleep(0.05)

    try:
        ids = [start_process("t_naps").process_id for _ in range(4)]
        wait_for(lambda: ProcessLease.objects.filter(process_id__in=ids).exclude(owner="").count() == 4,
                 "4 runs to hold leases")

        status = set_engine_paused(True, by="ops")

        assert (status.status, status.running_processes) == ("pausing", 4)
        with pytest.raises(EnginePaused):
            start_process("t_naps")
        wait_for(lambda: engine_status().status == "paused", "the engine to be paused")
        stopped = list(Process.objects.filter(pk__in=ids).values_list("status", flat=True))
        assert stopped == ["running"] * 4  # stopped between steps, none finished
        clock.sleep(0.5)
        rows_while_paused = ProcessStep.objects.filter(process_id__in=ids).count()
        clock.sleep(0.5)
        assert ProcessStep.objects.filter(process_id__in=ids).count() == rows_while_paused  # nothing moves

        set_engine_paused(False, by="ops")

        wait_for(lambda: Process.objects.filter(pk__in=ids, status="completed").count() == 4, "all to complete")
    finally:
        set_engine_paused(False)
        threadpool.shutdown()
    for pid in ids:
        assert [name for name, _ in log(Process.objects.get(pk=pid))] == ["Start", "Nap 1", "Nap 2", "Nap 3", "Done"]
        assert effects(f"nap1-{pid}") == [f"nap1-{pid}"]
