"""Fan-out on real Celery workers: a parent's children are handed to the workers like any process, run on
both at once, and the whole survives workers killed (kill -9) in the middle of it, with every item done once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from processes.engine import current_state
from processes.models import Process, ProcessStep
from processes.recovery import recover_stalled_processes
from processes.services import start_process
from tests.processes.compose_flows import effects
from tests.processes.test_executors import (  # noqa: F401  (broker_at: the fixture)
    ROOT,
    WORKER_START_SECONDS,
    _stop,
    _test_queue,
    _worker_env,
    broker_at,
)

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

# A Redis database of its own: test_executors' tests (db 5) may run at the same time on another xdist worker,
# and each empties its database first.
BROKER = os.environ.get("TEST_CELERY_FANOUT_BROKER_URL", "redis://127.0.0.1:6379/7")
CHILDREN = 30
KILL_AT = (5, 13, 21)  # children completed when a worker is killed (and a new one started)


def _worker(name: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--loglevel", "INFO", "--hostname", f"{name}@%h",
         "--concurrency", "1", "--pool", "solo", "--include", "tests.processes.flows,tests.processes.compose_flows"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _ready(worker: subprocess.Popen, log: Path) -> bool:
    return worker.poll() is not None or b"ready." in log.read_bytes()


def _unfinished_children(parent: Process) -> list[tuple]:
    """For a failure's message: each unfinished child's item, status and run record."""
    return list(Process.objects.filter(parent=parent).exclude(status="completed").values_list(
        "child_index", "status", "last_step", "lease__owner", "lease__expires_at", "lease__resends"))


def _completed_children(parent: Process) -> int:
    return Process.objects.filter(parent=parent, status="completed").count()


def test_a_fan_out_on_two_celery_workers_killed_three_times_does_every_item_once_and_completes(
    settings, broker_at, tmp_path  # noqa: F811  (the fixture, imported)
):
    queue = _test_queue(BROKER)
    # A short lease: a killed worker's child is recovered a second after its last renewal. A child that is
    # handed over and never claimed (its message reserved by a worker killed before it began: Redis gives it
    # back only after the visibility timeout) is handed over again 5 s after it was queued, not 300: the
    # worker that queues a child sets its resend time, so the workers need the setting too. A second
    # hand-over is harmless: the run that gets the lease runs it, the other finds it taken.
    settings.ORCHESTRATOR = {"EXECUTOR": "celery", "LEASE_SECONDS": 1.0, "RESEND_AFTER_SECONDS": 5.0}
    broker_at(BROKER)
    env = {**_worker_env(), "CELERY_BROKER_URL": BROKER, "ORCHESTRATOR_LEASE_SECONDS": "1",
           "ORCHESTRATOR_RESEND_AFTER_SECONDS": "5", "COMPOSE_TEST_CHILD_SECONDS": "0.2"}
    rng = random.Random(15)
    workers: dict[str, tuple[subprocess.Popen, Path]] = {}

    def add_worker() -> None:
        name = f"w{len(workers) + 1}"
        log = tmp_path / f"{name}.log"
        workers[name] = (_worker(name, log, env), log)

    add_worker()
    add_worker()
    killed: list[tuple[str, int, str]] = []  # (worker, children completed, the parent's status) at each kill
    recovered: list = []
    try:
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not all(_ready(w, lg) for w, lg in workers.values()):
            assert time.monotonic() < deadline, "the Celery workers never became ready"
            time.sleep(0.1)
        assert all(w.poll() is None for w, _ in workers.values()), "a worker did not start"

        parent = start_process("t_fan_out", user_input={"count": CHILDREN, "tag": "celery"}, by="alice")
        deadline = time.monotonic() + 180
        last_sweep = 0.0
        while Process.objects.get(pk=parent.pk).status != "completed":
            assert time.monotonic() < deadline, (
                f"the parent never completed: {Process.objects.get(pk=parent.pk).status}, "
                f"{_completed_children(parent)} of {CHILDREN} children completed, kills {killed}, recovered "
                f"{recovered}; unfinished: {_unfinished_children(parent)}")
            done = _completed_children(parent)
            if len(killed) < len(KILL_AT) and done >= KILL_AT[len(killed)]:
                alive = [name for name, (w, _) in workers.items() if w.poll() is None]
                victim = rng.choice(alive)
                os.kill(workers[victim][0].pid, signal.SIGKILL)  # wherever it is: a step, a join, idle
                killed.append((victim, done, Process.objects.get(pk=parent.pk).status))
                add_worker()
            if time.monotonic() - last_sweep >= 0.5:  # the scheduler's sweep, as run_scheduler runs it
                recovered += recover_stalled_processes()
                last_sweep = time.monotonic()
            time.sleep(0.05)
    finally:
        _stop([w for w, _ in workers.values()])
        queue.flushdb()

    # The kills landed in the middle of the fan-out, with the parent waiting and children still to run.
    assert len(killed) == len(KILL_AT), killed
    assert all(status == "awaiting_children" and done < CHILDREN for _, done, status in killed), killed
    kids = list(Process.objects.filter(parent=parent).order_by("child_index"))
    assert [(k.child_index, k.child_round, k.status) for k in kids] == [(i, 1, "completed") for i in range(CHILDREN)]
    # Every item's work was done exactly once, and every child logged each of its steps once.
    assert [effects(f"child-celery-{i}") for i in range(CHILDREN)] == [1] * CHILDREN
    for kid in kids:
        assert Counter(ProcessStep.objects.filter(process=kid).values_list("name", flat=True)) == Counter(
            {"Start": 1, "Work on the item": 1, "Done": 1}), (kid.child_index, recovered)
    assert effects("parent-celery") == 1
    assert current_state(parent)["total"] == sum(2 * i for i in range(CHILDREN))
    assert list(ProcessStep.objects.filter(process=parent).order_by("id").values_list("name", "status")) == [
        ("Start", "success"), ("Work on every item", "awaiting_children"), ("Work on every item", "success"),
        ("Add up the children's results", "success"), ("Done", "complete")]
    # Both workers took children (they ran in parallel): the kill and the replacement logs say which ran.
    ran_on = {name for name, (_, log) in workers.items() if b"run_process" in log.read_bytes()}
    assert len(ran_on) >= 2, ran_on
