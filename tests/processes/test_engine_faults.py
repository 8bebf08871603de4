"""Fault injection: every fault, at every point it can strike, ends the same way.

The process ends `completed` (after the engine's own recovery: reconnecting, the scheduler's sweep) or
`failed`/`waiting` with a reason on its row; it never stays `running` with no live run; and no step's
effect is applied twice (each step writes one counted row, `effects()`).

Points: before the step (its lock), inside the step (its work done, not committed), while logging its
success, while logging its failure, between two steps (no transaction open), at the hand-off to the
executor. Faults: the database connection lost (the server ends it: fail-over, restart,
`pg_terminate_backend`), a failure that cannot be recorded, the workflow removed from code, and the worker
killed with SIGKILL (in a separate OS process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import DataError, connection
from django.utils import timezone

from orchestrator_site.database_url import postgres_url
from processes import engine, leases, records, steplog
from processes.engine_settings import engine_status
from processes.executors.inline import InlineExecutor
from processes.models import Process, ProcessLease, ProcessStep
from processes.recovery import recover_stalled_processes
from processes.services import abort_process, retry_process, start_process
from subscriptions.models import ResourceType
from tests.processes import flows
from tests.processes.test_engine_crash import database_url, kill_when_inside
from workflows.registry import get_workflow, register, unregister

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["before the step", "inside the step", "while logging success", "while logging failure",
          "between steps", "at hand-off"]
# Backoffs shortened so that five reconnects take milliseconds, not seconds.
FAST = {"DB_RECONNECT_TRIES": 5, "DB_RECONNECT_BACKOFF_SECONDS": 0.01, "DB_RECONNECT_BACKOFF_MAX_SECONDS": 0.02}


@pytest.fixture(autouse=True)
def fast(settings):
    settings.ORCHESTRATOR = dict(FAST)
    yield
    settings.ORCHESTRATOR = {}


# --- what every test asserts -------------------------------------------------------------------------
def effect_counts(pid: object) -> Counter[str]:
    """How often each step's effect was applied: {"a": 1, "b": 1, ...} (rows named "<letter>-<pid>")."""
    names = ResourceType.objects.filter(resource_type__endswith=f"-{pid}").values_list("resource_type", flat=True)
    return Counter(name[: -len(f"-{pid}")] for name in names)


def settle(pid: object, sweeps: int = 12) -> Process:
    """What the scheduler does, tick after tick (each a bit later than the last), until no run is needed."""
    for tick in range(1, sweeps + 1):
        process = Process.objects.get(pk=pid)
        if process.status != "running":
            return process
        recover_stalled_processes(now=timezone.now() + timedelta(hours=2 * tick))
    return Process.objects.get(pk=pid)


def assert_ended_visibly(process: Process) -> None:
    assert process.status in ("completed", "failed", "waiting", "aborted"), (
        f"left {process.status} with no live run; lease: {ProcessLease.objects.filter(process=process).first()}")
    if process.status in ("failed", "waiting"):
        assert process.failed_reason.strip(), "failed without a reason on its row"
        last = ProcessStep.objects.filter(process=process).order_by("-id").first()
        assert last.status in ("failed", "waiting") and last.error.strip(), "no failed row says why"
    assert not ProcessLease.objects.filter(process=process).exists(), "a finished process still holds a run"


def assert_completed_once(pid: object) -> Process:
    process = settle(pid)
    assert_ended_visibly(process)
    assert process.status == "completed", process.failed_reason
    assert effect_counts(pid) == Counter({"a": 1, "b": 1, "c": 1})
    names = [name for name, status in ProcessStep.objects.filter(process=process).order_by("id")
             .values_list("name", "status") if status in ("success", "complete")]
    assert len(names) == len(set(names)), names  # no step logged twice
    return process


# --- injecting faults --------------------------------------------------------------------------------
def kill_now() -> None:
    """The server ends this connection at this very point (the statement raises)."""
    flows.kill_own_connection()


def kill_quietly() -> None:
    """The server ends this connection while it is idle: the next statement finds it gone."""
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    with psycopg.connect(database_url().replace("postgres://", "postgresql://"), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    time.sleep(0.05)


class Injector:
    """Arms one fault at one point: `times` injections (or every time with None) at the `nth` passage and after."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, point: str, fault: Callable[[], None],
                 times: int | None = 1, nth: int = 2) -> None:
        self.fault, self.times, self.nth, self.passages, self.injected = fault, times, nth, 0, 0
        target = {
            "before the step": (steplog, "lock", "before"),
            "inside the step": (engine, "call_step", "after"),
            "while logging success": (steplog, "advance", "after"),
            "while logging failure": (records, "_record_failure", "before"),
            "between steps": (engine, "_run_one_step", "before"),
            "at hand-off": (InlineExecutor, "submit", "before"),
        }[point]
        owner, name, when = target
        original = getattr(owner, name)
        injector = self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if when == "before":
                injector.maybe()
            result = original(*args, **kwargs)
            if when == "after":
                injector.maybe()
            return result

        if owner is InlineExecutor:
            monkeypatch.setattr(owner, name, lambda self, *a, **k: wrapped(self, *a, **k))
        else:
            monkeypatch.setattr(owner, name, wrapped)

    def maybe(self) -> None:
        self.passages += 1
        if self.passages >= self.nth and (self.times is None or self.injected < self.times):
            self.injected += 1
            self.fault()


def nth_for(point: str) -> int:
    # Which passage is the second step's ("Write B..."): the first is Write A's, except for the hand-off
    # (one per run) and the failure record (only the failing step passes there).
    return {"at hand-off": 1, "while logging failure": 1}.get(point, 2)


# --- the database connection lost ---------------------------------------------------------------------
@pytest.mark.parametrize("point", POINTS)
def test_a_connection_lost_once_at_any_point_is_recovered_by_the_engine_and_the_process_completes_once(
    monkeypatch, point
):
    if point == "while logging failure":
        flows.CONTROL["fail_times"] = 1  # Write B fails once; its record meets the lost connection
    fault = kill_quietly if point in ("between steps", "at hand-off") else kill_now
    injector = Injector(monkeypatch, point, fault, times=1, nth=nth_for(point))

    process = start_process("t_writes")

    assert injector.injected == 1
    process = assert_completed_once(process.process_id)
    # Recovered by the run itself: no failed step row, nothing for a human to retry.
    assert not ProcessStep.objects.filter(process=process, status="failed").exists()


@pytest.mark.parametrize("point", [p for p in POINTS if p != "at hand-off"])
def test_a_connection_lost_at_every_try_fails_the_process_after_the_bounded_reconnects_with_the_reason(
    monkeypatch, point
):
    if point == "while logging failure":
        flows.CONTROL["fail_times"] = 100
    fault = kill_quietly if point == "between steps" else kill_now
    injector = Injector(monkeypatch, point, fault, times=None, nth=nth_for(point))

    process = settle(start_process("t_writes").process_id)

    assert_ended_visibly(process)
    assert process.status == "failed"
    assert "lost the database connection 5 times in a row while running this step" in process.failed_reason
    assert process.failed_reason.startswith("Write B then maybe fail: ")
    assert injector.injected == 5
    assert effect_counts(process.process_id) == Counter({"a": 1})  # Write B's work: never kept
    monkeypatch.undo()
    flows.CONTROL["fail_times"] = 0
    settings_fast()
    assert retry_process(process.process_id).status == "completed"  # once the database is back
    assert effect_counts(process.process_id) == Counter({"a": 1, "b": 1, "c": 1})


def settings_fast() -> None:
    from django.conf import settings

    settings.ORCHESTRATOR = dict(FAST)


def test_a_step_whose_own_work_loses_the_connection_is_run_again_and_its_write_is_kept_once():
    flows.CONTROL["kill_times"] = 2  # the step writes, then the server ends the connection, twice

    process = start_process("t_lose_connection")

    assert flows.CONTROL["kill_times"] == 0
    assert_completed_once(process.process_id)


def test_a_database_that_refuses_connections_for_a_while_is_waited_out_and_the_process_completes(settings):
    # As a restart or a fail-over looks from a worker: its connection ends, and for a moment no new one
    # is accepted.
    settings.ORCHESTRATOR = {"DB_RECONNECT_TRIES": 8, "DB_RECONNECT_BACKOFF_SECONDS": 0.2,
                             "DB_RECONNECT_BACKOFF_MAX_SECONDS": 1.0}
    name = connection.settings_dict["NAME"]
    # The server's maintenance database, however the test database is reached (TCP or a Unix socket).
    admin_url = postgres_url({**connection.settings_dict, "NAME": "postgres", "OPTIONS": {}})
    refused_for = 1.5

    def outage() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                time.sleep(refused_for)
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    original = flows.kill_own_connection

    def kill_and_refuse() -> None:
        outage_thread = threading.Thread(target=outage)
        outage_thread.start()
        time.sleep(0.2)  # the database refuses new connections from now on
        kill_and_refuse.thread = outage_thread  # type: ignore[attr-defined]
        original()

    flows.CONTROL["kill_times"] = 1
    flows.kill_own_connection = kill_and_refuse
    started = time.monotonic()
    try:
        process = start_process("t_lose_connection")
    finally:
        flows.kill_own_connection = original
        kill_and_refuse.thread.join(timeout=10)  # type: ignore[attr-defined]

    assert time.monotonic() - started > refused_for  # it waited the outage out
    assert_completed_once(process.process_id)


def test_thirteen_processes_losing_the_connection_mid_step_all_complete_by_themselves():
    # The hostile test that found the gap: 13 of 13 such processes ended failed.
    pids = []
    for _ in range(13):
        flows.CONTROL["kill_times"] = 1
        pids.append(start_process("t_lose_connection").process_id)

    for pid in pids:
        assert_completed_once(pid)


# --- failures that cannot be recorded ----------------------------------------------------------------
def test_an_error_message_with_nul_bytes_is_recorded_and_fails_the_process_with_the_reason():
    process = start_process("t_nul_error")

    assert_ended_visibly(process := Process.objects.get(pk=process.pk))
    assert process.status == "failed"
    assert "the device answered b'OK\\x00\\x00garbage'" in process.failed_reason
    failed = ProcessStep.objects.get(process=process, status="failed")
    assert failed.name == "Fail with a NUL byte" and "\\x00" in failed.error
    assert effect_counts(process.process_id) == Counter({"a": 1})


def test_a_step_returning_text_the_state_cannot_store_fails_naming_the_key():
    process = Process.objects.get(pk=start_process("t_nul_state").pk)

    assert_ended_visibly(process)
    assert process.status == "failed"
    assert "returned 'banner'" in process.failed_reason and "NUL character" in process.failed_reason


def test_when_the_failure_record_cannot_be_written_a_minimal_one_fails_the_process(monkeypatch):
    def unstorable(*args: Any, **kwargs: Any) -> None:
        raise DataError("unsupported Unicode escape sequence: the state cannot be stored")

    monkeypatch.setattr(records, "_record_failure", unstorable)
    flows.CONTROL["fail_times"] = 1

    process = Process.objects.get(pk=start_process("t_writes").pk)

    assert_ended_visibly(process)
    assert process.status == "failed"
    assert process.failed_reason.startswith("Write B then maybe fail: RuntimeError: the external system said no")
    assert "the full record of this failure could not be written" in process.failed_reason
    failed = ProcessStep.objects.filter(process=process).order_by("-id").first()
    assert failed.status == "failed"
    # The state of the last successful step, copied by the database: a retry starts from it.
    assert failed.state_after()["a_written"] is True
    monkeypatch.undo()
    assert retry_process(process.process_id).status == "completed"
    assert effect_counts(process.process_id) == Counter({"a": 1, "b": 1, "c": 1})


def test_a_failure_nothing_can_record_is_recovered_a_bounded_number_of_times_then_failed_saying_so(
    monkeypatch, settings
):
    settings.ORCHESTRATOR = {**FAST, "RECOVERY_MAX_TIMES": 3}

    def broken(*args: Any, **kwargs: Any) -> None:
        raise DataError("the log cannot be written")

    monkeypatch.setattr(records, "_record_failure", broken)
    monkeypatch.setattr(records, "_record_minimal_failure", broken)
    flows.CONTROL["fail_times"] = 100

    process = Process.objects.get(pk=start_process("t_writes").pk)
    # Not recorded: still running, its lease left to lapse (no live run once it does).
    assert process.status == "running"
    attempts = Counter()
    for tick in range(1, 10):
        before = ResourceType.objects.count()
        recover_stalled_processes(now=timezone.now() + timedelta(hours=tick))
        attempts[tick] = ResourceType.objects.count() - before
        if Process.objects.get(pk=process.pk).status != "running":
            break

    process = Process.objects.get(pk=process.pk)
    assert_ended_visibly(process)
    assert process.status == "failed"
    assert "its run stopped 3 times in a row at this step without finishing it" in process.failed_reason
    assert process.failed_reason.startswith("Write B then maybe fail: ")
    assert flows.CONTROL["fail_times"] == 100 - 4  # the first run and 3 recoveries; never a 5th
    assert effect_counts(process.process_id) == Counter({"a": 1})


# --- the workflow removed from code ------------------------------------------------------------------
@pytest.mark.parametrize("point", ["at hand-off", "between steps"])
def test_a_workflow_removed_while_its_process_is_queued_or_running_fails_it_with_the_reason(monkeypatch, point):
    spec = get_workflow("t_writes")
    injector = Injector(monkeypatch, point, lambda: unregister("t_writes"), times=1, nth=nth_for(point))
    try:
        process = Process.objects.get(pk=start_process("t_writes").pk)
    finally:
        register(spec)
    assert injector.injected == 1

    process = settle(process.process_id)
    assert_ended_visibly(process)
    assert process.status == "failed"
    assert "workflow t_writes was removed from code" in process.failed_reason
    expected = Counter() if point == "at hand-off" else Counter({"a": 1})
    assert effect_counts(process.process_id) == expected


# --- the worker killed (SIGKILL, a separate OS process) ----------------------------------------------
WORKER = """
import os, sys, time
from pathlib import Path
import django
django.setup()
import tests.processes.flows  # noqa: F401  the test workflows
from processes import engine, records, steplog

marker, point = Path(sys.argv[2]), os.environ["FAULT_POINT"]

def hang():
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)

def at(owner, name, when, nth):
    original, seen = getattr(owner, name), []
    def wrapped(*args, **kwargs):
        seen.append(1)
        if when == "before" and len(seen) == nth:
            hang()
        result = original(*args, **kwargs)
        if when == "after" and len(seen) == nth:
            hang()
        return result
    setattr(owner, name, wrapped)

{
    "at hand-off": lambda: at(engine, "_run_one_step", "before", 1),
    "inside the step": lambda: at(engine, "call_step", "after", 2),
    "while logging success": lambda: at(steplog, "advance", "after", 2),
    "between steps": lambda: at(engine, "_run_one_step", "before", 2),
    # inside the failure record's transaction: the process row locked, the failed row not yet committed
    "while logging failure": lambda: at(records, "get_process", "after", 1),
}[point]()
if point == "while logging failure":
    tests.processes.flows.CONTROL["fail_times"] = 1
engine.run_process(sys.argv[1])
"""


@pytest.mark.parametrize("point", ["at hand-off", "inside the step", "while logging success", "between steps",
                                   "while logging failure"])
def test_a_worker_killed_at_any_point_is_recovered_by_the_sweep_and_completes_each_step_once(
    settings, tmp_path, point
):
    lease = 1.0
    settings.ORCHESTRATOR = {**FAST, "EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": lease}
    pid = str(start_process("t_writes").process_id)
    marker = tmp_path / "inside"
    env = {**os.environ, "DATABASE_URL": database_url(), "FAULT_POINT": point, "ORCHESTRATOR_LEASE_SECONDS": str(lease),
           "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, pid, str(marker)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kill_when_inside(worker, marker, f"the point {point!r}")

    settings.ORCHESTRATOR = {**FAST, "LEASE_SECONDS": lease}  # the sweep's hand-over runs here, inline
    deadline = time.monotonic() + 15
    while Process.objects.get(pk=pid).status == "running":
        recover_stalled_processes()
        assert time.monotonic() < deadline, "the sweep never recovered the process"
        time.sleep(0.2)
    process = assert_completed_once(pid)
    assert ProcessLease.objects.filter(process=process).count() == 0


# --- the run record: queued, claimed, proof of life ----------------------------------------------------
def test_a_finished_process_never_keeps_a_run_record():
    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes")
    completed = start_process("t_writes")

    assert (failed.status, completed.status) == ("failed", "completed")
    assert not ProcessLease.objects.exists()
    assert engine_status().running_processes == 0


def test_a_step_abort_request_after_the_run_died_is_carried_out_by_the_sweep(settings):
    settings.ORCHESTRATOR = {**FAST, "EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    process = start_process("t_writes")
    # A run claimed it, was asked to abort while in a step, and died before its next boundary.
    ProcessLease.objects.filter(process=process).update(
        owner="dead-run", expires_at=timezone.now() - timedelta(seconds=1), abort_requested_at=timezone.now(),
        abort_requested_by="ops", abort_reason="wrong customer")

    recover_stalled_processes()

    process = Process.objects.get(pk=process.pk)
    assert process.status == "aborted"
    assert process.failed_reason == "aborted by ops: wrong customer"
    assert effect_counts(process.process_id) == Counter()
    assert not ProcessLease.objects.exists()


def test_abort_requests_are_honoured_even_for_a_process_that_then_fails():
    # Nothing to do with timing: the request is on the record when the step's failure is recorded.
    flows.CONTROL["fail_times"] = 1
    original = records._record_failure

    def request_then_record(process_id, *args, **kwargs):
        ProcessLease.objects.filter(process_id=process_id).update(
            abort_requested_at=timezone.now(), abort_requested_by="ops", abort_reason="stop it")
        return original(process_id, *args, **kwargs)

    records._record_failure = request_then_record
    try:
        process = Process.objects.get(pk=start_process("t_writes").pk)
    finally:
        records._record_failure = original

    assert process.status == "aborted"
    statuses = list(ProcessStep.objects.filter(process=process).order_by("id").values_list("status", flat=True))
    assert statuses[-2:] == ["failed", "abort"]
    assert not ProcessLease.objects.exists()


def test_abort_requests_are_honoured_when_only_a_minimal_failure_record_could_be_written():
    # The full record fails (say the state cannot be stored): the minimal one is written, and the abort
    # asked for meanwhile still ends the process instead of leaving it failed.
    flows.CONTROL["fail_times"] = 1
    original = records._record_failure

    def request_then_break(process_id, *args, **kwargs):
        ProcessLease.objects.filter(process_id=process_id).update(
            abort_requested_at=timezone.now(), abort_requested_by="ops", abort_reason="stop it")
        raise ValueError("the state cannot be stored")

    records._record_failure = request_then_break
    try:
        process = Process.objects.get(pk=start_process("t_writes").pk)
    finally:
        records._record_failure = original

    assert process.status == "aborted"
    assert process.failed_reason == "aborted by ops: stop it"
    rows = list(ProcessStep.objects.filter(process=process).order_by("id").values_list("status", "error"))
    assert [status for status, _ in rows[-2:]] == ["failed", "abort"]
    assert "the full record of this failure could not be written: ValueError: the state cannot be stored" in rows[-2][1]
    assert not ProcessLease.objects.exists()


def test_abort_of_a_queued_process_is_immediate_and_its_late_message_runs_nothing(settings):
    settings.ORCHESTRATOR = {**FAST, "EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    process = start_process("t_writes")

    aborted = abort_process(process.process_id, by="ops", reason="not needed")

    assert aborted.status == "aborted" and not getattr(aborted, "abort_pending", False)
    engine.run_process(process.process_id)  # the message arrives after all
    assert Process.objects.get(pk=process.pk).status == "aborted"
    assert effect_counts(process.process_id) == Counter()
    assert not ProcessLease.objects.exists()
    assert leases.rows_in_use([process.process_id]) == set()
