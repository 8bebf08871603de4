"""Executors: the thread pool, Celery (broker down, real workers), and a process run twice runs once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest.mock import Mock

import pytest
import redis
from django.utils import timezone
from kombu import pools as kombu_pools

from orchestrator_site.celery import app as celery_app
from processes.engine import current_state, run_process
from processes.executors import threadpool
from processes.models import Process, ProcessStatus, ProcessStep
from processes.services import start_process
from processes.tasks import run_process_task
from subscriptions.models import ResourceType
from tests.processes.test_engine_crash import database_url

ROOT = Path(__file__).resolve().parents[2]
URL = "/api/processes/"
DOWN_BROKER = "redis://127.0.0.1:6390/0"  # nothing listens there
TEST_BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
runs = pytest.mark.django_db(transaction=True)
# How long a Celery worker may take to start: seconds on a quiet machine, but a loaded 2-core machine (a suite
# next to other work) has taken over 30. The wait ends as soon as the worker says it is ready.
WORKER_START_SECONDS = 120


def step_counts(process_id: object) -> Counter[str]:
    return Counter(ProcessStep.objects.filter(process_id=process_id).values_list("name", flat=True))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def broker_at() -> Iterator:
    """Point the Celery app at another broker for one test (its connection pool follows)."""
    original = celery_app.conf.broker_url

    def use(url: str) -> None:
        # Celery caches a connection pool and a producer pool bound to the old URL: close and drop them
        # (as Celery itself does after a fork) so the next publish connects to the new broker.
        kombu_pools.reset()  # kombu's process-wide producer pools, keyed by connection
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        celery_app.conf.broker_url = url

    yield use
    use(original)


@pytest.fixture
def api(staff_api):
    return staff_api


# --- the thread pool ---------------------------------------------------------------------------------
# The SQLite test database lives in memory with a shared cache, whose table locks make a second
# thread's writes fail ("database table is locked"); a file database (WAL) is fine, as in `make run`.
@pytest.mark.requires_postgres
@runs
def test_the_threadpool_runs_a_process_to_the_end_off_the_callers_thread(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 2}
    try:
        processes = [start_process("t_thread", by="alice") for _ in range(3)]
        ids = [p.process_id for p in processes]
        wait_until(lambda: Process.objects.filter(pk__in=ids, status=ProcessStatus.COMPLETED).count() == 3,
                   20, "the thread pool to complete the processes")
    finally:
        threadpool.shutdown(wait=True)
    for process_id in ids:
        state = ProcessStep.objects.filter(process_id=process_id, name="Note the thread").get().state_after()
        assert state["thread"].startswith("orchestrator-process")
        assert state["thread"] != threading.current_thread().name
        assert step_counts(process_id)["Note the thread"] == 1


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("max_age", [0, 60])
def test_a_pool_thread_keeps_its_connection_while_work_waits_and_closes_it_when_idle(monkeypatch, settings, max_age):
    from django.db import connection

    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 1}
    # CONN_MAX_AGE=0: closed as soon as the queue is empty; 60 (the default): kept while idle, as a web
    # request thread keeps its own, and closed when the pool shuts down.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", max_age)
    first_started, go_on = threading.Event(), threading.Event()
    backends: list[int] = []

    def job(process_id: object) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backends.append(cursor.fetchone()[0])
        first_started.set()
        go_on.wait(10)  # the first job holds the one thread until the others are queued

    monkeypatch.setattr(threadpool, "run_process", job)
    threadpool.shutdown(wait=True)
    try:
        pool = threadpool.ThreadpoolExecutor()
        futures = [pool.submit(f"job-{i}") for i in range(5)]
        assert first_started.wait(10)
        go_on.set()
        for future in futures:
            future.result(timeout=10)
        # Five jobs back to back on one connection: opened once, not once per process.
        assert len(backends) == 5 and len(set(backends)) == 1

        def held() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backends[0]])
                return cursor.fetchone()[0] == 1

        if max_age:
            assert held()  # idle, and kept for the next process
            pool.submit("job-5").result(timeout=10)
            assert backends[-1] == backends[0]
            threadpool.shutdown(wait=True)
        # The queue is empty (0), or the pool was shut down (60): the thread has closed it.
        wait_until(lambda: not held(), 5, "the pool thread to close its database connection")
    finally:
        go_on.set()
        threadpool.shutdown(wait=True)


def test_a_threadpool_job_logs_an_exception_instead_of_losing_it(monkeypatch, caplog):
    def broken(process_id: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(threadpool, "run_process", broken)
    try:
        threadpool.ThreadpoolExecutor().submit("some-id").result(timeout=10)
    finally:
        threadpool.shutdown(wait=True)
    assert "process some-id: the thread pool's run failed" in caplog.text
    assert "database gone" in caplog.text


# --- one runner per process --------------------------------------------------------------------------
@runs
def test_the_same_process_run_twice_logs_each_step_once(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    process = start_process("t_writes", by="alice")
    run_process(process.process_id)
    run_process(process.process_id)  # a duplicated message: the process is no longer running
    run_process_task.apply(args=[str(process.process_id)])  # and the Celery task, delivered again
    assert Process.objects.get(pk=process.process_id).status == ProcessStatus.COMPLETED
    counts = step_counts(process.process_id)
    assert counts and set(counts.values()) == {1}, counts
    assert ResourceType.objects.filter(resource_type__endswith=str(process.process_id)).count() == 3


@pytest.mark.requires_postgres
@runs
def test_two_runners_of_one_process_at_once_run_each_step_once(settings):
    # Two workers got the same message (a redelivery): the row lock and position check let one run
    # each step, whichever it is.
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    ids = [start_process("t_slow", by="alice").process_id for _ in range(5)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def runner() -> None:
        from django.db import connection

        try:
            barrier.wait()
            for process_id in ids:
                run_process(process_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    for process_id in ids:
        assert Process.objects.get(pk=process_id).status == ProcessStatus.COMPLETED
        counts = step_counts(process_id)
        assert counts == Counter({"Start": 1, "Slow write 1": 1, "Slow write 2": 1, "Done": 1}), counts
        assert ResourceType.objects.filter(resource_type__endswith=str(process_id)).count() == 2


# --- Celery: the broker down ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_start_with_the_broker_down_is_503_and_leaves_no_process(settings, api, broker_at):
    settings.ORCHESTRATOR = {"EXECUTOR": "celery"}
    broker_at(DOWN_BROKER)
    started = time.monotonic()
    response = api.post(URL, {"workflow": "t_writes"}, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert "could not reach the broker at redis://127.0.0.1:6390/0" in response.json()["detail"]
    assert "nothing was started" in response.json()["detail"]
    assert time.monotonic() - started < 5  # fails fast, no patient reconnecting
    assert not Process.objects.exists()
    # With an idempotency key too: no key is kept, the same request may be repeated later.
    response = api.post(URL, {"workflow": "t_writes"}, format="json", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 503
    assert not Process.objects.exists()


@runs
def test_a_broker_lost_after_the_commit_leaves_the_process_queued_and_the_sweep_hands_it_over_once_back(
    settings, api, broker_at, monkeypatch
):
    # The check before the start passed, then the broker went away before the publish: the process
    # exists (committed) with its queued run record, so nothing is lost; the recovery sweep hands it over
    # again, with backoff, until a worker takes it.
    from processes.executors.celery import CeleryExecutor
    from processes.models import ProcessLease
    from processes.recovery import recover_stalled_processes

    settings.ORCHESTRATOR = {"EXECUTOR": "celery"}
    broker_at(DOWN_BROKER)
    monkeypatch.setattr(CeleryExecutor, "check_available", lambda self: None)
    response = api.post(URL, {"workflow": "t_writes"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "running"
    process = Process.objects.get()
    record = ProcessLease.objects.get(process=process)
    assert record.queued and record.resends == 0
    assert record.last_error.startswith("could not be handed to the executor: could not reach the broker")
    assert record.expires_at <= timezone.now()  # due at the next sweep, not in RESEND_AFTER_SECONDS

    # A sweep while the broker is still down: handed over again, refused again, counted; it keeps its
    # backoff (the next try is not at the very next tick).
    assert recover_stalled_processes() == [process.process_id]
    record.refresh_from_db()
    assert (record.queued, record.resends) == (True, 1)
    assert record.expires_at > timezone.now() + timedelta(seconds=500)
    assert recover_stalled_processes() == []
    assert Process.objects.get().status == ProcessStatus.RUNNING

    # Once the broker is back (here: an executor that runs it), the sweep's next hand-over runs it.
    monkeypatch.undo()
    settings.ORCHESTRATOR = {}
    assert recover_stalled_processes(now=timezone.now() + timedelta(hours=1)) == [process.process_id]
    assert Process.objects.get().status == ProcessStatus.COMPLETED
    assert step_counts(process.process_id)["Write A"] == 1
    assert not ProcessLease.objects.exists()


@runs
def test_starts_check_the_broker_on_a_kept_connection_and_only_when_it_was_not_seen_working(
    settings, api, broker_at, monkeypatch
):
    import redis.connection
    from kombu.exceptions import OperationalError

    queue = _test_queue()
    settings.ORCHESTRATOR = {"EXECUTOR": "celery"}
    broker_at(TEST_BROKER)
    seen = Counter()

    def spy(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            seen[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    spy(redis.connection.Connection, "_connect")  # a new TCP connection to the broker
    spy(redis.Redis, "ping")  # a round trip that only checks

    def start() -> int:
        return api.post(URL, {"workflow": "t_writes"}, format="json").status_code

    try:
        assert [start() for _ in range(10)] == [201] * 10
        # The first start checked; each later one followed a hand-over that worked. Before, every start
        # opened a connection of its own to check the broker: 10 more connections, 10 more pings.
        assert seen["ping"] <= 2 and seen["_connect"] <= 2, seen
        checked = seen["ping"]

        with monkeypatch.context() as broken:  # the broker went away after the check: the hand-over fails
            broken.setattr(run_process_task, "apply_async", Mock(side_effect=OperationalError("gone")))
            assert start() == 201  # written, queued: the recovery sweep hands it over (see the test above)
        assert seen["ping"] == checked
        assert start() == 201
        assert seen["ping"] == checked + 1  # not seen working since: this start checked again

        settings.ORCHESTRATOR = {"EXECUTOR": "celery", "BROKER_CHECK_SECONDS": 0.0}
        assert [start() for _ in range(3)] == [201] * 3
        assert seen["ping"] == checked + 4  # checked before each one
        assert seen["_connect"] <= 2, seen  # on the same connection
    finally:
        queue.flushdb()


# --- Celery: two real workers --------------------------------------------------------------------------
def _test_queue(url: str = TEST_BROKER) -> redis.Redis:
    """The tests' own Redis database, emptied; a skip without Redis, a failure in CI."""
    queue = redis.Redis.from_url(url)
    try:
        queue.flushdb()
    except redis.ConnectionError as exc:
        reason = f"needs Redis at {url} ({exc}); .ci/run starts it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)  # as for PostgreSQL: never a silent skip in CI
        pytest.skip(reason)
    return queue


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()  # warm shutdown: finishes the run in hand
    for worker in workers:
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

def _worker_env() -> dict[str, str]:
    """The environment of a worker subprocess: this test database, the test broker, the Celery executor."""
    return {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": TEST_BROKER,
            "ORCHESTRATOR_EXECUTOR": "celery", "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}


def _worker(name: str, command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*command, "--hostname", f"{name}@%h", "--concurrency", "1", "--pool", "solo",
                             "--include", "tests.processes.flows"],
                            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.mark.requires_postgres
@runs
def test_100_processes_started_through_the_api_run_on_two_celery_workers_each_step_once(
    settings, api, broker_at, tmp_path
):
    queue = _test_queue()
    settings.ORCHESTRATOR = {"EXECUTOR": "celery"}
    broker_at(TEST_BROKER)
    env = _worker_env()
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    # One through manage.py run_worker, one through the standard celery command: both documented.
    workers = [
        _worker("w1", [sys.executable, "manage.py", "run_worker", "--loglevel", "INFO"], logs[0], env),
        _worker("w2", [sys.executable, "-m", "celery", "-A", "orchestrator_site", "worker", "--loglevel", "INFO",
                       "--without-gossip", "--without-mingle"], logs[1], env),
    ]
    try:
        for worker, log in zip(workers, logs, strict=True):
            wait_until(lambda w=worker, lg=log: w.poll() is not None or b"ready." in lg.read_bytes(),
                       WORKER_START_SECONDS, f"worker {log.stem} to be ready")
            assert worker.poll() is None, log.read_text()

        ids = []
        for _ in range(100):
            response = api.post(URL, {"workflow": "t_writes"}, format="json")
            assert response.status_code == 201, response.content
            ids.append(response.json()["id"])
        # And every message once more, as a broker redelivering them would: nothing may run twice.
        for process_id in ids:
            run_process_task.apply_async(args=[process_id])

        def all_done() -> bool:
            assert all(w.poll() is None for w in workers), [lg.read_text()[-3000:] for lg in logs]
            return Process.objects.filter(pk__in=ids, status=ProcessStatus.COMPLETED).count() == len(ids)

        wait_until(all_done, 120, "the workers to complete 100 processes")
    finally:
        _stop(workers)
        queue.flushdb()

    expected = Counter({"Start": 1, "Write A": 1, "Write B then maybe fail": 1, "Write C": 1, "Done": 1})
    rows = Counter(ProcessStep.objects.filter(process_id__in=ids).values_list("process_id", "name"))
    assert len(rows) == 5 * len(ids) and set(rows.values()) == {1}
    for process_id in ids[:3]:
        assert step_counts(process_id) == expected
    assert ResourceType.objects.filter(resource_type__regex=r"^[abc]-").count() == 3 * len(ids)
    # Both workers took part (each logs the runs it finished).
    for log in logs:
        assert b"succeeded" in log.read_bytes(), log.read_text()[-3000:]


@pytest.mark.requires_postgres
@runs
def test_a_celery_worker_keeps_its_connection_between_processes_and_replaces_a_dead_one(
    settings, api, broker_at, tmp_path
):
    from django.db import connection

    queue = _test_queue()
    settings.ORCHESTRATOR = {"EXECUTOR": "celery"}
    broker_at(TEST_BROKER)
    env = _worker_env()
    log = tmp_path / "w1.log"
    worker = _worker("w1", [sys.executable, "manage.py", "run_worker", "--loglevel", "INFO"], log, env)

    def run(count: int) -> list[int]:
        ids = [api.post(URL, {"workflow": "t_backend"}, format="json").json()["id"] for _ in range(count)]
        wait_until(lambda: Process.objects.filter(pk__in=ids, status=ProcessStatus.COMPLETED).count() == count,
                   60, "the worker to complete the processes")
        return [current_state(process_id)["backend"] for process_id in ids]

    try:
        wait_until(lambda: worker.poll() is not None or b"ready." in log.read_bytes(), WORKER_START_SECONDS,
                   "the worker to be ready")
        first = run(10)
        # Ten processes, one connection: the worker did not reconnect for each.
        assert len(set(first)) == 1, first
        # The database drops that connection while the worker is idle (a restart, a fail-over): the next
        # process still completes, on a new connection, with nothing failed.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first[0]])
        second = run(3)
        assert len(set(second)) == 1 and second[0] != first[0]
        assert not Process.objects.filter(workflow__name="t_backend").exclude(status="completed").exists()
    finally:
        _stop([worker])
        queue.flushdb()


@pytest.mark.requires_postgres
@runs
def test_a_worker_killed_mid_step_is_recovered_by_the_other_within_the_lease_and_one_sweep(
    settings, api, broker_at, tmp_path
):
    from processes.recovery import recover_stalled_processes

    queue = _test_queue()
    lease_seconds, sweep_every = 2.0, 0.5
    settings.ORCHESTRATOR = {"EXECUTOR": "celery", "LEASE_SECONDS": lease_seconds}
    broker_at(TEST_BROKER)
    env = {**_worker_env(), "ORCHESTRATOR_LEASE_SECONDS": str(lease_seconds), "ENGINE_TEST_DIR": str(tmp_path)}
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [_worker(name, [sys.executable, "manage.py", "run_worker", "--loglevel", "INFO"], log, env)
               for name, log in zip(("w1", "w2"), logs, strict=True)]
    hang = tmp_path / "all.hang"
    hang.touch()
    try:
        for worker, log in zip(workers, logs, strict=True):
            wait_until(lambda w=worker, lg=log: w.poll() is not None or b"ready." in lg.read_bytes(),
                       WORKER_START_SECONDS, f"worker {log.stem} to be ready")
        response = api.post(URL, {"workflow": "t_killable"}, format="json")
        assert response.status_code == 201, response.content
        pid = response.json()["id"]
        inside = tmp_path / f"{pid}.inside"
        wait_until(lambda: inside.exists() and inside.read_text(), 30, "a worker to be inside the step")
        victim = int(inside.read_text())
        assert victim in {w.pid for w in workers}
        os.kill(victim, 9)  # SIGKILL in the middle of the step: its write is done but not committed
        killed_at = time.monotonic()
        hang.unlink()

        # The scheduler's sweep, every `sweep_every` seconds, as run_scheduler does.
        def recovered() -> bool:
            recover_stalled_processes()
            time.sleep(sweep_every)
            return Process.objects.get(pk=pid).status == ProcessStatus.COMPLETED

        wait_until(recovered, 30, "the other worker to finish the process")
        took = time.monotonic() - killed_at
    finally:
        hang.unlink(missing_ok=True)
        _stop(workers)
        queue.flushdb()

    # Within the lease plus a sweep (and the few steps left, and a slow machine's margin).
    assert took < lease_seconds + sweep_every + 5, took
    counts = step_counts(pid)
    assert counts == Counter({"Start": 1, "Write A": 1, "Write, then hang while the hang file exists": 1,
                              "Write C": 1, "Done": 1}), counts
    for effect in ("a", "hang", "c"):
        assert ResourceType.objects.filter(resource_type=f"{effect}-{pid}").count() == 1
