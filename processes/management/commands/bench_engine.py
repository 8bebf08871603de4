"""`manage.py bench_engine [--processes N] [--steps M] [--executor E --workers 1,2,4] [--fanout N]`: engine step
throughput.

Inline (the default) compares the engine with a raw-SQL baseline in this process; threadpool and celery
run the processes through W threads or W Celery worker processes and report steps/s for each W. `--fanout N`
runs one parent with N children instead, inline and on W workers, in one table (_bench_fanout).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.database_url import postgres_url
from processes.bench_baseline import BaselineDB, baseline_connection, baseline_process
from processes.bench_workflow import FANOUT_ENV, FANOUT_MAX, PAYLOAD_ENV, STEPS_ENV, declare_bench_workflow
from processes.engine import engine_paused
from processes.executors import threadpool
from processes.management.commands._base import OneLineCommand, Seconds, WholeNumber
from processes.models import Process, ProcessStatus, ProcessStep
from processes.services import start_process
from workflows.models import Workflow
from workflows.registry import WorkflowSpec, unregister

logger = logging.getLogger(__name__)

DELETE_CHUNK = 500
EXECUTOR_CHOICES = ("inline", "threadpool", "celery")
DEFAULT_BROKER = "redis://127.0.0.1:6379/6"
UNFINISHED = (ProcessStatus.CREATED, ProcessStatus.RUNNING, ProcessStatus.RESUMED)
# Sane bounds: a benchmark that would run for days, or declare a workflow of a million steps, is a typo.
PROCESSES = WholeNumber(1, 1_000_000)
STEPS = WholeNumber(1, 1_000)
PAYLOAD = WholeNumber(0, 1_000_000)
WORKERS = WholeNumber(1, 256)
TIMEOUT = Seconds(maximum=86_400.0)
FANOUT = WholeNumber(1, FANOUT_MAX)
REPEAT = WholeNumber(1, 100)


@dataclass
class StepQueries:
    """The queries of one process run, split into its transactions: creation, then one per step."""

    start: list[str]
    steps: list[list[str]]
    outside: list[str]


class Command(OneLineCommand):
    help = (
        "Run N processes of M no-op steps through the engine and compare its steps/s with a raw driver "
        "baseline (insert a step row, update a process row, commit) on the same database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--processes", type=PROCESSES, default=None,
                            help=f"How many processes to run (default 200, at most {PROCESSES.maximum:,}).")
        parser.add_argument("--steps", type=STEPS, default=10,
                            help=f"No-op body steps per process (default 10, at most {STEPS.maximum:,}).")
        parser.add_argument("--payload", type=PAYLOAD, default=0,
                            help="Bytes each body step adds to the state (default 0: a tiny counter only); shows "
                                 "how the cost per step and the step log grow with the state.")
        parser.add_argument("--keep", action="store_true", help="Keep the benchmark's processes afterwards.")
        parser.add_argument("--verbose-queries", action="store_true", help="Print the SQL of one engine step.")
        parser.add_argument("--executor", default=None,
                            help="inline (default: runs here, compared with the baseline), threadpool (W threads "
                                 "in this process) or celery (W worker processes, each --pool solo). With "
                                 "--fanout, the executors to run after inline, comma-separated (default "
                                 "threadpool), e.g. threadpool,celery.")
        parser.add_argument("--workers", default=None,
                            help="Comma-separated worker counts W for threadpool and celery (default 1; 1,2,4 with "
                                 "--fanout), e.g. 1,2,4.")
        parser.add_argument("--broker", default=os.environ.get("BENCH_ENGINE_BROKER_URL", DEFAULT_BROKER),
                            help=f"A Redis database of its own for --executor celery, flushed before and after "
                                 f"(default {DEFAULT_BROKER}).")
        parser.add_argument("--timeout", type=TIMEOUT, default=600.0,
                            help="Seconds to wait for one worker count's processes (with --fanout: one run's "
                                 "parent) to complete (default 600).")
        parser.add_argument("--fanout", type=FANOUT, default=None,
                            help=f"Run one parent whose step starts N child processes of --steps steps (at most "
                                 f"{FANOUT.maximum:,}), then uses their merged results: steps/s of all their rows, "
                                 f"inline and on each executor and worker count, next to a baseline.")
        parser.add_argument("--repeat", type=REPEAT, default=None,
                            help="With --fanout: runs per line of the table, whose median it shows (default 3).")

    def handle(self, *args: Any, processes: int | None = None, steps: int = 10, keep: bool = False,
               verbose_queries: bool = False, executor: str | None = None, workers: str | None = None,
               broker: str = DEFAULT_BROKER, timeout: float = 600.0, payload: int = 0, fanout: int | None = None,
               repeat: int | None = None, **options: Any) -> None:
        # Checked again for a caller that passes them directly (call_command), skipping argparse's types.
        steps = STEPS.check("--steps", steps)
        timeout = TIMEOUT.check("--timeout", timeout)
        payload = PAYLOAD.check("--payload", payload)
        if fanout is not None:
            self._handle_fanout(FANOUT.check("--fanout", fanout), steps, processes, payload, verbose_queries,
                                executor, workers, repeat, broker, timeout, keep)
            return
        if repeat is not None:
            raise CommandError("--repeat applies to --fanout; the other runs are timed once")
        processes = PROCESSES.check("--processes", 200 if processes is None else processes)
        executor = "inline" if executor is None else executor
        workers = "1" if workers is None else workers
        if executor not in EXECUTOR_CHOICES:
            raise CommandError(f"--executor must be one of {', '.join(EXECUTOR_CHOICES)}, not {executor!r}")
        counts = _parse_workers(workers)
        if executor == "inline" and counts != [1]:
            raise CommandError("--workers applies to --executor threadpool and celery; inline runs in one thread")
        vendor = connection.vendor
        self._refuse_unmeasurable()
        if executor != "inline":
            self._handle_concurrent(executor, counts, processes, steps, keep, broker, timeout, payload)
            return
        if orchestrator_setting("EXECUTOR") != "inline":
            raise CommandError(
                f"ORCHESTRATOR['EXECUTOR'] is {orchestrator_setting('EXECUTOR')!r}: the benchmark times processes run "
                f"to the end in this process, so it needs the 'inline' executor"
            )

        spec = declare_bench_workflow(steps, payload)
        created: list[uuid.UUID] = []
        # Every logged step counts, for the engine and the baseline alike: Start (logged when the
        # process is created), the M body steps and Done, each its own transaction.
        logged = steps + 2
        # One INFO line per started process would bury the figures (and costs nothing worth measuring).
        previous_disable = logging.root.manager.disable
        logging.disable(max(previous_disable, logging.INFO))
        try:
            # Untimed warm-up: creates the Workflow row and fills Django's and the driver's caches.
            self._start(spec, created)
            with CaptureQueriesContext(connection) as captured:
                self._start(spec, created)
            split = _split_transactions([q["sql"] for q in captured.captured_queries], steps)
            # Query logging (on whenever DEBUG is) costs time per query that production does not pay.
            with override_settings(DEBUG=False), baseline_connection() as db:
                engine_seconds, baseline_seconds, baseline_bytes, engine_cpu, baseline_cpu = self._measure(
                    spec, processes, logged, created, db, payload)
            engine_bytes = _log_bytes(created[2:])  # the measured processes, not the warm-up ones
        finally:
            logging.disable(previous_disable)
            self._clean_up(spec, created, keep)
            unregister(spec.name)

        total = processes * logged
        engine_rate, baseline_rate = total / engine_seconds, total / baseline_seconds
        out = self.stdout
        settings_dict = connection.settings_dict
        where = ""
        if vendor != "sqlite":
            where = f" ({settings_dict['HOST'] or 'local socket'}:{settings_dict['PORT'] or 'default port'})"
        out.write(f"database:      {vendor} {settings_dict['NAME']}{where}")
        if vendor == "postgresql":
            options = settings_dict.get("OPTIONS") or {}
            # Part of the gap is the driver configuration, not the engine: say how each side talks to the server.
            binding = "server" if options.get("server_side_binding") is True else "client"
            out.write(f"driver:        Django: {binding}-side binding, "
                      f"prepare_threshold={options.get('prepare_threshold')}; baseline: psycopg defaults "
                      f"(server-side binding, statements prepared after 5 runs)")
        out.write(f"workload:      {processes} processes x {steps} no-op steps; counted: all {logged} logged steps "
                  f"per process (Start, {steps} body, Done) = {total} steps, one transaction each")
        out.write(f"engine:        {total} steps in {engine_seconds:.3f} s = {engine_rate:,.0f} steps/s "
                  f"({engine_seconds / total * 1000:.3f} ms/step, {engine_seconds / processes * 1000:.2f} ms/process)")
        driver = "psycopg" if vendor == "postgresql" else "sqlite3"
        out.write(f"baseline:      {total} steps in {baseline_seconds:.3f} s = {baseline_rate:,.0f} steps/s "
                  f"({baseline_seconds / total * 1000:.3f} ms/step; {driver}, "
                  f"one connection, per step: insert step row + update process row + commit)")
        out.write(f"ratio:         {engine_rate / baseline_rate:.2f} (engine / baseline)")
        # This process's CPU time: what Python does per step on each side, apart from waiting for the
        # server (less sensitive to a loaded machine than the wall-clock figures above).
        out.write(f"client CPU:    engine {engine_cpu / total * 1000:.3f} ms/step, baseline "
                  f"{baseline_cpu / total * 1000:.3f} ms/step")
        out.write(f"step log:      engine {engine_bytes / processes / 1024:,.1f} kB per process "
                  f"({engine_bytes / processes / steps:,.0f} bytes per body step); baseline (each step's changes "
                  f"only) {baseline_bytes / processes / 1024:,.1f} kB per process "
                  f"({baseline_bytes / processes / steps:,.0f} bytes per body step); each body step adds "
                  f"{payload:,} bytes")
        body = split.steps[:steps]
        statements = [len([sql for sql in queries if not _is_transaction_control(sql)]) for queries in body]
        done = len(split.steps[steps]) if len(split.steps) > steps else 0
        out.write(f"queries/step:  {sum(statements) / steps:.1f} statements + BEGIN/COMMIT per body step "
                  f"(one process: {len(captured.captured_queries)} = creation {len(split.start)} "
                  f"+ {steps} body steps {sum(map(len, body))} + Done {done} + outside transactions "
                  f"{len(split.outside)}, BEGIN/COMMIT included)")
        if statements[0] != statements[-1]:
            out.write(f"               (the first body step runs {statements[0]}: it reads the state from the log; "
                      f"later steps get it from the step before, {statements[-1]})")
        if verbose_queries:
            # A later step is the steady state; the first one also reads the state from the log.
            position = 1 if steps > 1 else 0
            out.write(f"queries of body step {position + 1}:")
            for sql in body[position]:
                out.write(f"  {sql}")
        if keep:
            out.write(f"kept {len(created)} processes of workflow {spec.name}")

    # --- one parent, N children -------------------------------------------------------------------
    def _handle_fanout(self, fanout: int, steps: int, processes: int | None, payload: int, verbose_queries: bool,
                       executor: str | None, workers: str | None, repeat: int | None, broker: str, timeout: float,
                       keep: bool) -> None:
        from processes.management.commands._bench_fanout import Fanout, run_fanout

        if processes is not None:
            raise CommandError("--processes does not apply to --fanout: it runs one parent with --fanout children")
        if payload:
            raise CommandError("--payload does not apply to --fanout: its children's steps add nothing to the state")
        if verbose_queries:
            raise CommandError("--verbose-queries does not apply to --fanout")
        executors = [part.strip() for part in ("threadpool" if executor is None else str(executor)).split(",")]
        if not all(part in EXECUTOR_CHOICES for part in executors) or len(set(executors)) != len(executors):
            raise CommandError(f"--executor with --fanout takes distinct executors out of "
                               f"{', '.join(EXECUTOR_CHOICES)}, comma-separated, not {executor!r}")
        concurrent = [part for part in executors if part != "inline"]  # inline always runs, first
        if not concurrent and workers is not None:
            raise CommandError("--workers applies to --executor threadpool and celery; inline runs in one thread")
        counts = _parse_workers("1,2,4" if workers is None else workers)
        repeat = REPEAT.check("--repeat", 3 if repeat is None else repeat)
        self._refuse_unmeasurable()
        if "celery" in concurrent:
            _worker_database_url()  # refuses an in-memory SQLite database before anything runs
        run_fanout(self.stdout, self.stderr, Fanout(children=fanout, steps=steps, executors=concurrent,
                                                    workers=counts if concurrent else [], repeat=repeat,
                                                    timeout=timeout, broker=broker, keep=keep))

    def _refuse_unmeasurable(self) -> None:
        vendor = connection.vendor
        if vendor not in ("postgresql", "sqlite"):
            raise CommandError(f"the baseline supports PostgreSQL and SQLite only, not {vendor}")
        if engine_paused():
            raise CommandError("the engine is paused: resume it (admin, engine settings) before benchmarking it")

    # --- the engine ------------------------------------------------------------------------------
    def _start(self, spec: WorkflowSpec, created: list[uuid.UUID]) -> None:
        process = start_process(spec.name)
        created.append(process.process_id)  # before the check: a failed process is cleaned up too
        if process.status != ProcessStatus.COMPLETED:
            raise CommandError(f"benchmark process {process.process_id} ended {process.status}: "
                               f"{process.failed_reason or 'no reason given'}")

    def _measure(self, spec: WorkflowSpec, processes: int, logged: int, created: list[uuid.UUID],
                 db: BaselineDB, payload: int) -> tuple[float, float, int, float, float]:
        """Time the engine and the baseline in alternating rounds of about 10% of the processes each.

        Alternating keeps the ratio honest on a shared machine: a burst of load elsewhere slows both
        sides, not just whichever happened to run at the time.
        """
        rounds = min(10, processes)
        try:
            db.create()
            engine_seconds = baseline_seconds = engine_cpu = baseline_cpu = 0.0
            finished = 0
            for round_number in range(1, rounds + 1):
                count = processes * round_number // rounds - finished
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(count):
                    self._start(spec, created)
                engine_seconds += time.perf_counter() - started
                engine_cpu += time.process_time() - cpu
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(count):
                    baseline_process(db, spec.name, logged, payload)
                baseline_seconds += time.perf_counter() - started
                baseline_cpu += time.process_time() - cpu
                finished += count
                if processes >= 20:
                    self.stderr.write(f"  {finished}/{processes} processes: engine {engine_seconds:.1f} s, "
                                      f"baseline {baseline_seconds:.1f} s")
            return engine_seconds, baseline_seconds, db.log_bytes(), engine_cpu, baseline_cpu
        finally:
            db.drop()

    # --- threadpool and celery: W workers --------------------------------------------------------
    def _handle_concurrent(self, executor: str, counts: list[int], processes: int, steps: int, keep: bool,
                           broker: str, timeout: float, payload: int) -> None:
        worker_database = _worker_database_url() if executor == "celery" else ""
        spec = declare_bench_workflow(steps, payload)
        created: list[uuid.UUID] = []
        logged = steps + 2
        total = processes * logged
        base = dict(getattr(settings, "ORCHESTRATOR", {}) or {})
        results: list[tuple[int, float]] = []
        previous_disable = logging.root.manager.disable
        logging.disable(max(previous_disable, logging.INFO))
        try:
            # Untimed warm-up, inline: creates the Workflow row and shows the workflow runs at all.
            with override_settings(ORCHESTRATOR={**base, "EXECUTOR": "inline"}):
                self._start(spec, created)
            with override_settings(DEBUG=False):
                with baseline_connection() as db:
                    baseline_seconds = self._measure_baseline(spec, processes, logged, db, payload)
                for count in counts:
                    with override_settings(ORCHESTRATOR={**base, "EXECUTOR": executor, "THREADPOOL_WORKERS": count}):
                        if executor == "threadpool":
                            try:
                                seconds = self._measure_round(spec, processes, count, created, timeout, lambda: None)
                            finally:
                                threadpool.shutdown(wait=True)
                        else:
                            with _celery_workers(count, steps, payload, broker, worker_database,
                                                 self.stderr) as check:
                                seconds = self._measure_round(spec, processes, count, created, timeout, check)
                    results.append((count, seconds))
        finally:
            logging.disable(previous_disable)
            self._clean_up(spec, created, keep)
            unregister(spec.name)

        out = self.stdout
        settings_dict = connection.settings_dict
        where = ""
        if connection.vendor != "sqlite":
            where = f" ({settings_dict['HOST'] or 'local socket'}:{settings_dict['PORT'] or 'default port'})"
        out.write(f"database:      {connection.vendor} {settings_dict['NAME']}{where}")
        if executor == "threadpool":
            out.write("executor:      threadpool: W threads in this process, each with its own connection")
        else:
            out.write(f"executor:      celery: W worker processes (manage.py run_worker --pool solo --concurrency 1), "
                      f"broker {broker}")
        out.write(f"workload:      {processes} processes x {steps} no-op steps; counted: all {logged} logged steps "
                  f"per process (Start, {steps} body, Done) = {total} steps; timed from the first start to the "
                  f"last completion")
        out.write(f"baseline:      {total} steps in {baseline_seconds:.3f} s = {total / baseline_seconds:,.0f} steps/s "
                  f"(one connection, per step: insert step row + update process row + commit)")
        for count, seconds in results:
            out.write(f"workers={count}: {total} steps in {seconds:.3f} s = {total / seconds:,.0f} steps/s")
        if keep:
            out.write(f"kept {len(created)} processes of workflow {spec.name}")

    def _measure_baseline(self, spec: WorkflowSpec, processes: int, logged: int, db: BaselineDB,
                          payload: int) -> float:
        try:
            db.create()
            started = time.perf_counter()
            for _ in range(processes):
                baseline_process(db, spec.name, logged, payload)
            return time.perf_counter() - started
        finally:
            db.drop()

    def _measure_round(self, spec: WorkflowSpec, processes: int, count: int, created: list[uuid.UUID],
                       timeout: float, check: Callable[[], None]) -> float:
        # Untimed warm-up: about one process per worker (connections, caches).
        self._run_all(spec, count, created, timeout, check, None)
        started = time.perf_counter()
        self._run_all(spec, processes, created, timeout, check, f"workers={count}")
        return time.perf_counter() - started

    def _run_all(self, spec: WorkflowSpec, processes: int, created: list[uuid.UUID], timeout: float,
                 check: Callable[[], None], label: str | None) -> None:
        """Start `processes` processes (the executor runs them) and wait until all of them have ended."""
        ids: list[uuid.UUID] = []
        for _ in range(processes):
            process_id = start_process(spec.name).process_id
            ids.append(process_id)
            created.append(process_id)
        started = time.monotonic()
        report = started + 2
        while True:
            check()
            ended = list(Process.objects.filter(pk__in=ids).exclude(status__in=UNFINISHED)
                         .values_list("status", "failed_reason"))
            bad = [(status, reason) for status, reason in ended if status != ProcessStatus.COMPLETED]
            if bad:
                raise CommandError(f"{len(bad)} benchmark process(es) did not complete: the first ended "
                                   f"{bad[0][0]}: {bad[0][1] or 'no reason given'}")
            if len(ended) == len(ids):
                return
            now = time.monotonic()
            if now - started > timeout:
                raise CommandError(f"timed out after {timeout:g} s: {len(ended)}/{len(ids)} processes completed")
            if label and now >= report:
                self.stderr.write(f"  {label}: {len(ended)}/{len(ids)} processes completed, {now - started:.1f} s")
                report = now + 2
            time.sleep(0.05)

    # --- cleanup ---------------------------------------------------------------------------------
    def _clean_up(self, spec: WorkflowSpec, created: list[uuid.UUID], keep: bool) -> None:
        if keep:
            return
        deleted = 0
        for first in range(0, len(created), DELETE_CHUNK):
            deleted += Process.objects.filter(pk__in=created[first:first + DELETE_CHUNK]).delete()[0]
        logger.debug("bench_engine: deleted %d rows of %d benchmark processes", deleted, len(created))
        # The Workflow row was created on first use; processes kept by an earlier --keep run protect it.
        if not Process.objects.filter(workflow__name=spec.name).exists():
            Workflow.objects.filter(name=spec.name).delete()


def _log_bytes(process_ids: list[uuid.UUID]) -> int:
    """Bytes of these processes' step rows as stored (PostgreSQL counts compressed values as compressed)."""
    table = connection.ops.quote_name(ProcessStep._meta.db_table)
    column = connection.ops.quote_name(ProcessStep._meta.get_field("process").column)
    size = ("pg_column_size(s.*)" if connection.vendor == "postgresql"
            else "COALESCE(length(s.state), 0) + COALESCE(length(s.delta), 0) + length(s.name) + 60")
    total = 0
    for first in range(0, len(process_ids), DELETE_CHUNK):
        chunk = [Process._meta.pk.get_db_prep_value(pk, connection) for pk in process_ids[first:first + DELETE_CHUNK]]
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(SUM({size}), 0) FROM {table} s WHERE s.{column} IN "
                           f"({', '.join(['%s'] * len(chunk))})", chunk)
            total += int(cursor.fetchone()[0])
    return total


def _parse_workers(value: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4]: positive integers, each once."""
    try:
        counts = [WORKERS(part) for part in str(value).split(",")]
    except argparse.ArgumentTypeError:
        counts = []
    if not counts or len(set(counts)) != len(counts):
        raise CommandError(f"--workers must be a comma-separated list of distinct whole numbers from "
                           f"{WORKERS.minimum} to {WORKERS.maximum} such as 1,2,4, not {value!r}")
    return counts


def _worker_database_url() -> str:
    """DATABASE_URL for the Celery workers: this command's database (the test database under pytest)."""
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        return postgres_url(s)
    name = str(s["NAME"])
    if name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
        raise CommandError("--executor celery needs a database its worker processes can open: PostgreSQL "
                           "or an SQLite file, not an in-memory SQLite database")
    return f"sqlite:///{Path(name).resolve()}"


def _use_broker(url: str) -> None:
    """Point this process's Celery app at `url` (its cached connection and producer pools too)."""
    from kombu import pools as kombu_pools

    from orchestrator_site.celery import app

    kombu_pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    app.conf.broker_url = url


@contextmanager
def _celery_workers(count: int, steps: int, payload: int, broker: str, database_url: str,
                    stderr: Any, *, fanout: bool = False) -> Iterator[Callable[[], None]]:
    """`count` Celery workers (one process, --pool solo, each), ready; stopped (terminate, then kill) after.
    They know the bench workflow of `steps` steps, or with `fanout` the fan-out parent and child workflows."""
    import redis

    from orchestrator_site.celery import app

    queue = redis.Redis.from_url(broker)
    try:
        queue.flushdb()
    except redis.RedisError as exc:
        raise CommandError(f"--executor celery needs its own Redis database at {broker} ({exc})") from exc
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker, "ORCHESTRATOR_EXECUTOR": "celery",
           STEPS_ENV: str(steps), PAYLOAD_ENV: str(payload), FANOUT_ENV: "1" if fanout else "",
           "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    base_dir = Path(settings.BASE_DIR)
    logs = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    original = app.conf.broker_url
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    failed = True

    def tails() -> str:
        return "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}" for _, log in workers)

    def check() -> None:
        dead = [log.name for worker, log in workers if worker.poll() is not None]
        if dead:
            raise CommandError(f"Celery worker(s) {', '.join(dead)} exited:\n{tails()}")

    try:
        for number in range(1, count + 1):
            log = logs / f"w{number}.log"
            command = [sys.executable, str(base_dir / "manage.py"), "run_worker", "--concurrency", "1",
                       "--pool", "solo", "--loglevel", "INFO", "--hostname", f"bench{number}@%h",
                       "--include", "processes.bench_workflow"]
            with log.open("wb") as handle:
                workers.append((subprocess.Popen(command, cwd=base_dir, env=env, stdout=handle,
                                                 stderr=subprocess.STDOUT), log))
        # They start at once and each takes CPU seconds to start Django and Celery (18 s of wall time for one on a
        # loaded two-CPU machine): a minute per worker, not one for all of them.
        ready_within = 60 * count
        deadline = time.monotonic() + ready_within
        for _worker, log in workers:
            while b"ready." not in log.read_bytes():
                check()
                if time.monotonic() > deadline:
                    raise CommandError(f"Celery worker {log.name} not ready after {ready_within} s:\n{tails()}")
                time.sleep(0.1)
        _use_broker(broker)
        yield check
        failed = False
    finally:
        for worker, _ in workers:
            if worker.poll() is None:
                worker.terminate()  # warm shutdown
        for worker, _ in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        _use_broker(original)
        with suppress(redis.RedisError):
            queue.flushdb()
        if failed:
            stderr.write(f"Celery worker logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


def _split_transactions(queries: list[str], steps: int) -> StepQueries:
    """Cut one process's queries into transactions (BEGIN ... COMMIT): its creation, then one per step."""
    transactions: list[list[str]] = []
    outside: list[str] = []
    current: list[str] | None = None
    for sql in queries:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head == "BEGIN":
            current = [sql]
            transactions.append(current)
        elif current is not None:
            current.append(sql)
            if head in ("COMMIT", "ROLLBACK"):
                current = None
        else:
            # Autocommit reads: before the start (checks, lookups) or after the last step (reading back).
            outside.append(sql)
    if len(transactions) < steps + 1:
        raise CommandError(
            f"could not find the creation and {steps} step transactions among one process's "
            f"{len(queries)} queries (found {len(transactions)} transactions)"
        )
    return StepQueries(start=transactions[0], steps=transactions[1:], outside=outside)


def _is_transaction_control(sql: str) -> bool:
    return sql.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))


