"""Fan-out under kill -9: a worker killed while it creates a parent's children leaves none of them, and workers
killed again and again at random moments of a fan-out (creating children, inside a child's step, in a child's
final transaction and join, in the parent's merge) leave every item done exactly once and every parent complete."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from processes import joins, leases
from processes.engine import current_state
from processes.models import Process, ProcessLease
from processes.recovery import recover_stalled_processes
from processes.services import start_process
from tests.processes.compose_flows import effects
from tests.processes.test_engine_crash import ROOT, database_url

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

LEASE = 0.5  # short: a killed worker's process is recovered half a second after its last renewal
KILLS = 50

# A fork server: Django is set up once (seconds), then each line on stdin forks a worker (milliseconds) and
# prints its pid. `run <id> <hang_after> <marker>` runs one process, hanging (after writing its pid to the
# marker) once it started `hang_after` children in its step's transaction; `pull` runs whatever is queued, for
# ever, as an executor's worker would.
FORK_SERVER = """
import os, random, signal, sys, time, traceback
from pathlib import Path
import django
django.setup()
from django.db import connections
import tests.processes.flows  # noqa: F401  (its DeferredExecutor: a started process waits to be pulled)
import tests.processes.compose_flows  # noqa: F401
from processes import services
from processes.engine import run_process
from processes.models import ProcessLease

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers, killed or not
real_start_child = services.start_child

def run(process_id, hang_after, marker):
    started = 0
    def start_child(*args, **kwargs):
        nonlocal started
        if started == hang_after:
            Path(marker).write_text(str(os.getpid()))
            while True:
                time.sleep(1)
        started += 1
        return real_start_child(*args, **kwargs)
    services.start_child = start_child
    run_process(process_id)

def pull():
    rng = random.Random(os.getpid())
    while True:
        queued = list(ProcessLease.objects.filter(owner="").values_list("process_id", flat=True)[:8])
        rng.shuffle(queued)
        for process_id in queued:
            run_process(process_id)
        if not queued:
            time.sleep(0.01)

for line in sys.stdin:
    words = line.split()
    connections.close_all()  # a worker opens a connection of its own, never shares one
    child = os.fork()
    if child == 0:
        code = 0
        try:
            run(words[1], int(words[2]), words[3]) if words[0] == "run" else pull()
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
    def __init__(self, tmp_path: Path, child_seconds: float = 0.0) -> None:
        self.log = tmp_path / "workers.log"
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
               "ORCHESTRATOR_EXECUTOR": "tests.processes.flows.DeferredExecutor",
               "ORCHESTRATOR_LEASE_SECONDS": str(LEASE), "ORCHESTRATOR_LOCK_WAIT_SECONDS": "5",
               "COMPOSE_TEST_CHILD_SECONDS": str(child_seconds)}
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"))
        self.workers: list[int] = []

    def fork(self, line: str) -> int:
        self.server.stdin.write(line + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        assert answer, f"the fork server died: {self.tail()}"
        self.workers.append(int(answer))
        return self.workers[-1]

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), "the worker's death", self)
        self.workers.remove(pid)

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


def run_dead(process_id: str) -> bool:
    record = ProcessLease.objects.filter(process_id=process_id).first()
    return (record is None or record.expires_at < timezone.now()) and not leases.rows_in_use([process_id])


@pytest.fixture
def server(tmp_path):
    servers: list[ForkServer] = []

    def make(child_seconds: float = 0.0) -> ForkServer:
        servers.append(ForkServer(tmp_path, child_seconds))
        return servers[-1]

    yield make
    for one in servers:
        one.close()


@pytest.mark.parametrize("hang_after", [0, 4, 9])
def test_a_worker_killed_while_creating_children_leaves_none_and_the_recovered_step_creates_each_once(
        settings, tmp_path, server, hang_after):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": LEASE}
    forks = server()
    parent = start_process("t_fan_out", user_input={"count": 10, "tag": f"made{hang_after}"}, by="alice")
    pid = str(parent.process_id)
    marker = tmp_path / "inside"
    worker = forks.fork(f"run {pid} {hang_after} {marker}")
    wait_for(lambda: marker.exists() and marker.read_text(), "the worker inside the children's creation", forks)
    forks.kill(worker)

    # Its step's transaction died with it: no child of it exists, and it is still at its children step.
    assert Process.objects.filter(parent_id=pid).count() == 0
    assert Process.objects.get(pk=pid).status == "running"

    wait_for(lambda: run_dead(pid), "the dead run's lease to lapse", forks)
    assert recover_stalled_processes() == [parent.process_id]
    forks.fork(f"run {pid} -1 {marker}")  # a healthy worker takes the recovered process
    wait_for(lambda: Process.objects.get(pk=pid).status == "awaiting_children", "the step's commit", forks)

    kids = Process.objects.filter(parent_id=pid)
    assert sorted(kids.values_list("child_index", "child_round")) == [(i, 1) for i in range(10)]
    assert recover_stalled_processes() == []  # the waiting parent holds no run that could be recovered

    settings.ORCHESTRATOR = {}  # the rest runs here, inline: each child, then the parent its join woke
    from processes.engine import run_process

    for kid in kids.order_by("child_index"):
        run_process(kid.process_id)
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert [effects(f"child-made{hang_after}-{i}") for i in range(10)] == [1] * 10
    assert current_state(parent)["total"] == 90


def test_workers_killed_50_times_at_random_moments_of_fan_outs_do_every_item_exactly_once(settings, tmp_path,
                                                                                         server):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": LEASE,
                             "RECOVERY_MAX_TIMES": 1000}
    forks = server(child_seconds=0.03)
    workers = [forks.fork("pull") for _ in range(3)]
    rng = random.Random(20261130)
    parents: list[tuple[Process, int]] = []

    def unfinished() -> bool:
        return Process.objects.filter(pk__in=[p.pk for p, _ in parents]).exclude(status="completed").exists()

    kills = recovered = 0
    deadline = time.monotonic() + 240
    while kills < KILLS:
        assert time.monotonic() < deadline, f"only {kills} kills in time; workers' log: {forks.tail()}"
        if not parents or not unfinished():
            count = rng.randint(8, 16)
            parents.append((start_process("t_fan_out", user_input={"count": count, "tag": f"kill{len(parents)}"},
                                          by="alice"), count))
        time.sleep(rng.uniform(0.01, 0.15))
        victim = rng.choice(workers)
        forks.kill(victim)
        workers.remove(victim)
        workers.append(forks.fork("pull"))
        kills += 1
        recovered += len(recover_stalled_processes())
        joins.sweep()

    # No more kills: the sweep recovers what the last ones left, and the workers finish.
    end = time.monotonic() + 120
    while unfinished():
        assert time.monotonic() < end, (
            f"not finished: {list(Process.objects.exclude(status='completed').values_list('status', 'last_step'))}; "
            f"workers' log: {forks.tail()}")
        recovered += len(recover_stalled_processes())
        joins.sweep()
        time.sleep(0.1)

    assert len(parents) >= 2, "the kills should span more than one fan-out"
    # Killed in the middle of work often enough to mean something: each recovery is a run that died inside.
    assert recovered >= 10, f"only {recovered} runs were recovered after {KILLS} kills"
    logging.getLogger(__name__).info("%d fan-outs, %d children, %d runs recovered", len(parents),
                                     sum(c for _, c in parents), recovered)
    for parent, count in parents:
        tag = current_state(parent)["tag"]
        kids = Process.objects.filter(parent=parent)
        # One child per item, never a second one (all of round 1: none was aborted or replaced).
        assert sorted(kids.values_list("child_index", "child_round", "status")) == [
            (i, 1, "completed") for i in range(count)], tag
        assert [effects(f"child-{tag}-{i}") for i in range(count)] == [1] * count, tag
        assert effects(f"parent-{tag}") == 1, tag
        assert current_state(parent)["total"] == sum(2 * i for i in range(count)), tag
        steps = [name for name, in parent.steps.values_list("name")]
        assert steps.count("Add up the children's results") == 1, tag
        assert steps.count("Done") == 1, tag
    assert not Process.objects.exclude(status="completed").exists()
