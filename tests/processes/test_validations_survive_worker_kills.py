"""A worker killed (SIGKILL) in the middle of a batch of validation starts, again and again: the task resumes
after the last committed batch each time, and every subscription gets exactly one validation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from processes import leases
from processes.engine import current_state
from processes.models import Process, ProcessLease, ProcessStep, ProcessSubscription
from processes.services import start_process
from tests.processes.test_engine_crash import ROOT, database_url
from tests.processes.test_validations_start_in_batches import STEP, nodes, validations

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 50
BATCH = 3
LEASE = 0.5  # short: each round waits for the killed worker's lease to lapse

# A fork server: Django is set up once (seconds), then each line on stdin forks a worker (milliseconds)
# that runs the task, and prints its pid. A worker told `hang_after` >= 0 hangs in its second batch after
# that many validation starts (made, not committed), having written the marker file: the test kills it there.
FORK_SERVER = """
import os, signal, sys, time, traceback
from pathlib import Path
import django
django.setup()
from django.db import connections
import tests.processes.flows  # noqa: F401  (its DeferredExecutor: the started validations are not run)
from processes import services
from processes.engine import run_process

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers, killed or not
size = int(os.environ["ORCHESTRATOR_VALIDATION_BATCH_SIZE"])
real_start = services.start_process

def work(process_id, hang_after, marker):
    calls = 0
    def start_process(*args, **kwargs):
        nonlocal calls
        if hang_after >= 0 and calls == size + hang_after:
            Path(marker).write_text(str(os.getpid()))
            while True:
                time.sleep(1)
        calls += 1
        return real_start(*args, **kwargs)
    services.start_process = start_process
    run_process(process_id)

for line in sys.stdin:
    process_id, hang_after, marker = line.split()
    connections.close_all()  # a worker opens a connection of its own, never shares one
    child = os.fork()
    if child == 0:
        code = 0
        try:
            work(process_id, int(hang_after), marker)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    print(child, flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ForkServer:
    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "workers.log"
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
               "ORCHESTRATOR_EXECUTOR": "tests.processes.flows.DeferredExecutor",
               "ORCHESTRATOR_VALIDATION_BATCH_SIZE": str(BATCH), "ORCHESTRATOR_LEASE_SECONDS": str(LEASE),
               "ORCHESTRATOR_LOCK_WAIT_SECONDS": "5"}
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"))
        self.workers: list[int] = []

    def worker(self, process_id: str, hang_after: int, marker: Path) -> int:
        self.server.stdin.write(f"{process_id} {hang_after} {marker}\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        assert line, f"the fork server died: {self.tail()}"
        self.workers.append(int(line))
        return self.workers[-1]

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def close(self) -> None:
        for pid in self.workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.server.stdin.close()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()


def wait_for(condition, what: str, server: ForkServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened; workers' log: {server.tail()}"
        time.sleep(0.02)


def kill_inside_its_second_batch(server: ForkServer, task_id: str, hang_after: int, marker: Path) -> None:
    """Start a worker on the task, wait until it is inside its second batch (the first committed), SIGKILL it."""
    worker = server.worker(task_id, hang_after, marker)
    wait_for(lambda: marker.exists() or not alive(worker), "the worker's second batch", server)
    wait_for(lambda: not alive(worker) or marker.read_text(), "the worker's pid in the marker", server)
    assert alive(worker), f"the worker ended before its second batch; its log: {server.tail()}"
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(worker), "the worker's death", server)


def run_dead(task_id: str) -> bool:
    """The task's last run is dead: its lease lapsed and no step of it holds the row (its connection is gone)."""
    record = ProcessLease.objects.filter(process_id=task_id).first()
    return (record is None or record.expires_at < timezone.now()) and not leases.rows_in_use([task_id])


def committed_batches(task_id: str) -> int:
    return ProcessStep.objects.filter(process_id=task_id, name=STEP, status="success").count()


def test_a_worker_killed_inside_a_batch_50_times_starts_every_validation_exactly_once(catalogue, settings, tmp_path):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "VALIDATION_BATCH_SIZE": BATCH}
    ids = nodes(BATCH * (ROUNDS + 2))
    task_id = str(start_process("task_validate_subscriptions").process_id)
    server = ForkServer(tmp_path)
    try:
        for round_ in range(ROUNDS):
            marker = tmp_path / f"inside-{round_}"
            hang_after = round_ % BATCH  # killed with 0, 1 or 2 starts of its second batch not committed
            kill_inside_its_second_batch(server, task_id, hang_after, marker)

            # Each worker committed exactly one batch before it was killed; the killed batch left nothing.
            assert committed_batches(task_id) == round_ + 1
            assert ProcessSubscription.objects.filter(
                process__workflow__name="validate_node").count() == BATCH * (round_ + 1)
            wait_for(lambda: run_dead(task_id), f"round {round_}: the lapse of the killed worker's lease", server)

        last = server.worker(task_id, -1, tmp_path / "never")
        wait_for(lambda: not alive(last), "the last worker's end", server, timeout=60)
    finally:
        server.close()

    state = current_state(task_id)
    steps = list(ProcessStep.objects.filter(process_id=task_id, name=STEP).values_list("status", flat=True))
    assert steps == ["success"] * (ROUNDS + 2), server.tail()  # one row per batch: none logged twice or failed
    assert (state["validations_started"], state["validations_refused"]) == (len(ids), 0)
    assert validations(ids) == dict.fromkeys(ids, 1)
    # Recovered 50 times at one step, yet not given up on (RECOVERY_MAX_TIMES): each time a batch had committed.
    assert Process.objects.get(pk=task_id).status == "completed"
