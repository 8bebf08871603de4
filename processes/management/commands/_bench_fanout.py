"""`manage.py bench_engine --fanout N`: one parent fanning out to N child processes, timed inline and on W workers.

One run starts the parent (its children step starts N children of M no-op steps, then one step uses their merged
results), waits until the parent has completed, checks the outcome (N children, each item once, all completed,
N merged results) and counts every step row written, the parent's and the children's. Its steps/s is those rows
over the time from the start to the parent's last row. Each configuration runs `repeat` times; the table shows
medians beside a raw-SQL baseline of as many rows measured in the same command, with the load average.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Count, Max, Q
from django.test.utils import override_settings
from django.utils import timezone

from processes.bench_baseline import baseline_connection, baseline_process
from processes.bench_workflow import CHILDREN_KEY, FANOUT_STEP, declare_fanout_workflows
from processes.executors import threadpool
from processes.lookups import current_state
from processes.management.commands.bench_engine import DELETE_CHUNK, _celery_workers, _worker_database_url
from processes.models import Process, ProcessStatus, ProcessStep, StepStatus
from processes.services import start_process
from workflows.models import Workflow
from workflows.registry import WorkflowSpec, unregister

logger = logging.getLogger(__name__)

# The parent's rows: Start, its children step twice ("awaiting children" when it starts them, "success" when
# it merges their results), the step that uses the results, Done. The baseline writes as many.
PARENT_ROWS = 5
# A process in any other status (failed, waiting for a retry, aborted...) does not go on by itself here (no
# scheduler runs): the run is wrong, and the command says so now rather than at the timeout.
GOING_ON = (ProcessStatus.CREATED, ProcessStatus.RUNNING, ProcessStatus.RESUMED, ProcessStatus.COMPLETED)
POLL_SECONDS = 0.02


@dataclass
class Run:
    """One measured fan-out: its step rows, seconds from the start to the parent's last row, and from the rows'
    timestamps: the children step's start (creating the N children in one transaction), and the join's cost (the
    last child's last row to the parent's last row; the merge step alone)."""

    rows: int
    seconds: float
    start: float
    join: float
    merge: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@dataclass
class Line:
    """One line of the table: a configuration, its runs, and the 1-minute load average before and after."""

    executor: str
    workers: int
    runs: list[Run] = field(default_factory=list)
    load_before: float | None = None
    load_after: float | None = None

    def median(self, what: Callable[[Run], float]) -> float:
        return statistics.median(what(run) for run in self.runs)


@dataclass
class Fanout:
    """What `bench_engine --fanout` was asked for."""

    children: int
    steps: int
    executors: list[str]
    workers: list[int]
    repeat: int
    timeout: float
    broker: str
    keep: bool


def run_fanout(stdout: Any, stderr: Any, options: Fanout) -> None:
    """Measure, check and clean up; print the table. A wrong run is a CommandError naming what was wrong."""
    parent_spec, child_spec = declare_fanout_workflows(options.steps)
    bench = _Bench(stderr, options, parent_spec)
    uptime_before = _uptime()
    load_at_start = _load()
    previous_disable = logging.root.manager.disable
    # One INFO line per started child would bury the figures.
    logging.disable(max(previous_disable, logging.INFO))
    lines: list[Line] = []
    try:
        # Query logging (on whenever DEBUG is) costs time per query that production does not pay.
        with override_settings(DEBUG=False):
            lines.append(bench.baseline())
            lines.append(bench.measure("inline", 1))
            for executor in options.executors:
                for count in options.workers:
                    lines.append(bench.measure(executor, count))
    except CommandError as exc:
        # The lines measured before it went wrong are worth having (ten minutes in, say): printed, then the error.
        if len(lines) > 1:
            _report(stdout, options, bench, lines, uptime_before, _uptime(), load_at_start,
                    stopped=f"stopped before the rest: {exc}")
        raise
    finally:
        logging.disable(previous_disable)
        bench.clean_up()
        unregister(parent_spec.name)
        unregister(child_spec.name)
    _report(stdout, options, bench, lines, uptime_before, _uptime(), load_at_start)


class _Bench:
    def __init__(self, stderr: Any, options: Fanout, parent_spec: WorkflowSpec) -> None:
        self.stderr = stderr
        self.options = options
        self.parent_name = parent_spec.name
        self.created: list[uuid.UUID] = []  # parents; deleting one deletes its children (and their logs)
        self.child_rows = options.steps + 2  # Start, the M body steps, Done

    @property
    def rows(self) -> int:
        return self.options.children * self.child_rows + PARENT_ROWS

    # --- the baseline -----------------------------------------------------------------------------
    def baseline(self) -> Line:
        """The raw-driver baseline (processes.bench_baseline) writing as many rows: N processes of M+2 rows
        and one of PARENT_ROWS, one transaction per row, on one connection; `repeat` times."""
        line = Line("baseline", 1, load_before=_load())
        with baseline_connection() as db:
            for _ in range(self.options.repeat):
                try:
                    db.create()
                    started = time.perf_counter()
                    for _ in range(self.options.children):
                        baseline_process(db, self.parent_name, self.child_rows, 0)
                    baseline_process(db, self.parent_name, PARENT_ROWS, 0)
                    line.runs.append(Run(self.rows, time.perf_counter() - started, 0.0, 0.0, 0.0))
                finally:
                    db.drop()
        line.load_after = _load()
        return line

    # --- the engine -------------------------------------------------------------------------------
    def measure(self, executor: str, workers: int) -> Line:
        line = Line(executor, workers, load_before=_load())
        base = dict(getattr(settings, "ORCHESTRATOR", {}) or {})
        orchestrator = {**base, "EXECUTOR": executor, "THREADPOOL_WORKERS": workers}
        with override_settings(ORCHESTRATOR=orchestrator), self._executor(executor, workers) as check:
            # Untimed warm-up: the Workflow rows, Django's caches, each worker's connection.
            self.run_once(max(2, workers), check, f"{executor} warm-up")
            for number in range(1, self.options.repeat + 1):
                label = f"{executor} workers={workers} run {number}/{self.options.repeat}"
                line.runs.append(self.run_once(self.options.children, check, label))
        line.load_after = _load()
        self.stderr.write(f"  {executor} workers={workers}: {_rate(line.median(lambda run: run.rate))} steps/s "
                          f"(median of {len(line.runs)})")
        return line

    @contextmanager
    def _executor(self, executor: str, workers: int) -> Iterator[Callable[[], None]]:
        if executor == "celery":
            with _celery_workers(workers, self.options.steps, 0, self.options.broker, _worker_database_url(),
                                 self.stderr, fanout=True) as check:
                yield check
            return
        if executor != "threadpool":
            yield lambda: None
            return
        finished = False
        try:
            yield lambda: None
            finished = True
        finally:
            if not finished:
                # Failed or interrupted (Ctrl-C): the children not yet taken by a thread are not run; the
                # ones running finish their step, then the threads stop, before the cleanup deletes them.
                _cancel_queued_jobs()
            threadpool.shutdown(wait=True)

    def run_once(self, children: int, check: Callable[[], None], label: str) -> Run:
        started_at = timezone.now()
        parent = start_process(self.parent_name, user_input={"count": children})
        self.created.append(parent.process_id)  # before any check: a wrong run is cleaned up too
        self._wait(parent.process_id, children, check, label)
        run = self._verify(parent.process_id, children, started_at, label)
        if not self.options.keep:
            # Each run starts from the same tables, not from those grown by the runs before it (untimed).
            self._delete([parent.process_id])
        return run

    def _wait(self, parent_id: uuid.UUID, children: int, check: Callable[[], None], label: str) -> None:
        started = time.monotonic()
        report = started + 2
        next_look = started  # at the children: a stuck child, or progress; not at every poll
        while True:
            check()
            status, reason = Process.objects.filter(pk=parent_id).values_list("status", "failed_reason").get()
            if status == ProcessStatus.COMPLETED:
                return
            if status not in (*GOING_ON, ProcessStatus.AWAITING_CHILDREN):
                raise CommandError(f"{label}: the parent process {parent_id} ended {status}: "
                                   f"{reason or 'no reason given'}")
            now = time.monotonic()
            if now >= next_look:
                stuck = (Process.objects.filter(parent_id=parent_id).exclude(status__in=GOING_ON)
                         .order_by("child_index")
                         .values_list("process_id", "child_index", "status", "failed_reason").first())
                if stuck:
                    raise CommandError(f"{label}: child process {stuck[0]} (item {stuck[1] + 1} of {children}) "
                                       f"is {stuck[2]}: {stuck[3] or 'no reason given'}; the parent would wait "
                                       f"for it forever")
                next_look = now + 0.5
            if now - started > self.options.timeout:
                done = Process.objects.filter(parent_id=parent_id, status=ProcessStatus.COMPLETED).count()
                raise CommandError(f"{label}: timed out after {self.options.timeout:g} s: {done}/{children} "
                                   f"children completed, the parent process {parent_id} is {status}")
            if now >= report:
                done = Process.objects.filter(parent_id=parent_id, status=ProcessStatus.COMPLETED).count()
                self.stderr.write(f"  {label}: {done}/{children} children completed, {now - started:.1f} s")
                report = now + 2
            time.sleep(POLL_SECONDS)

    def _verify(self, parent_id: uuid.UUID, children: int, started_at: datetime, label: str) -> Run:
        """Check the run did what a fan-out must (else a CommandError saying what), and time it from its rows."""
        wrong: list[str] = []
        kids = Process.objects.filter(parent_id=parent_id)
        statuses = dict(kids.values_list("status").annotate(n=Count("pk")).order_by())
        count = sum(statuses.values())
        if count != children:
            wrong.append(f"{count} children, not {children}")
        if set(statuses) - {ProcessStatus.COMPLETED}:
            wrong.append("children " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
        twice = list(kids.values("child_index").annotate(n=Count("pk")).filter(n__gt=1)
                     .values_list("child_index", "n").order_by("child_index")[:5])
        if twice:
            wrong.append("an item started more than once: " + ", ".join(f"item {index + 1}: {n} children"
                                                                         for index, n in twice))
        indexes = set(kids.values_list("child_index", flat=True))
        if indexes != set(range(children)):
            missing = sorted(set(range(children)) - indexes)[:5]
            wrong.append(f"items without a child: {', '.join(str(index + 1) for index in missing)}"
                         if missing else "children for items beyond the list")
        # Each child logs Start, its M steps and Done, once: a step that ran twice shows here.
        odd = list(kids.annotate(rows=Count("steps")).exclude(rows=self.child_rows)
                   .values_list("child_index", "rows").order_by("child_index")[:5])
        if odd:
            wrong.append(f"children whose log is not {self.child_rows} rows: "
                         + ", ".join(f"item {index + 1}: {rows}" for index, rows in odd))
        parent = Process.objects.filter(pk=parent_id).values_list("status", "failed_reason").get()
        if parent[0] != ProcessStatus.COMPLETED:
            wrong.append(f"the parent is {parent[0]} ({parent[1] or 'no reason given'})")
        else:
            state = current_state(parent_id)
            merged = state.get(CHILDREN_KEY)
            if not isinstance(merged, list) or len(merged) != children:
                wrong.append(f"the merged result holds {len(merged) if isinstance(merged, list) else merged!r} "
                             f"items, not {children}")
            elif state.get("merged_item_order") != list(range(children)):
                wrong.append("the merged results are not one per item in item order")
        if wrong:
            raise CommandError(f"{label}: the fan-out of process {parent_id} went wrong: {'; '.join(wrong)}")

        rows = ProcessStep.objects.filter(Q(process_id=parent_id) | Q(process__parent_id=parent_id)).count()
        last_child = ProcessStep.objects.filter(process__parent_id=parent_id).aggregate(at=Max("completed_at"))["at"]
        parent_end = ProcessStep.objects.filter(process_id=parent_id).aggregate(at=Max("completed_at"))["at"]
        fanned, merged = (
            ProcessStep.objects.filter(process_id=parent_id, name=FANOUT_STEP, status=status)
            .values_list("started_at", "completed_at").get()
            for status in (StepStatus.AWAITING_CHILDREN, StepStatus.SUCCESS))
        return Run(rows=rows, seconds=(parent_end - started_at).total_seconds(),
                   start=(fanned[1] - fanned[0]).total_seconds(), join=(parent_end - last_child).total_seconds(),
                   merge=(merged[1] - merged[0]).total_seconds())

    # --- cleanup --------------------------------------------------------------------------------------
    def _delete(self, parents: list[uuid.UUID]) -> None:
        for first in range(0, len(parents), DELETE_CHUNK):
            chunk = parents[first:first + DELETE_CHUNK]
            # The children first, in chunks of their own: a parent's delete would collect them all at once.
            children = list(Process.objects.filter(parent_id__in=chunk).values_list("pk", flat=True))
            for start in range(0, len(children), DELETE_CHUNK):
                Process.objects.filter(pk__in=children[start:start + DELETE_CHUNK]).delete()
            Process.objects.filter(pk__in=chunk).delete()
        self.created = [pk for pk in self.created if pk not in set(parents)]

    def clean_up(self) -> None:
        if self.options.keep:
            return
        self._delete(list(self.created))
        # The Workflow rows were created on first use; processes kept by an earlier --keep run protect them.
        for name in (self.parent_name, _child_name(self.parent_name)):
            if not Process.objects.filter(workflow__name=name).exists():
                Workflow.objects.filter(name=name).delete()


def _child_name(parent_name: str) -> str:
    return parent_name.replace("bench_fanout_", "bench_child_", 1)


def _cancel_queued_jobs() -> None:
    """Cancel the thread pool's jobs no thread has taken yet (what shutdown(cancel_futures=True) does; the
    pool module's shutdown waits for every queued one, which after Ctrl-C would run all the children)."""
    pool = threadpool._pool
    queue = getattr(pool, "_work_queue", None)
    if queue is None:
        return
    while True:
        try:
            job = queue.get_nowait()
        except Exception:  # queue.Empty
            return
        if job is not None:
            job.future.cancel()


def _report(out: Any, options: Fanout, bench: _Bench, lines: list[Line], uptime_before: str, uptime_after: str,
            load_at_start: float | None, stopped: str = "") -> None:
    """The table: the baseline (lines[0]), inline (lines[1]), then each executor and worker count measured."""
    settings_dict = connection.settings_dict
    where = ""
    if connection.vendor != "sqlite":
        where = f" ({settings_dict['HOST'] or 'local socket'}:{settings_dict['PORT'] or 'default port'})"
    out.write(f"database:      {connection.vendor} {settings_dict['NAME']}{where}")
    out.write(f"workload:      1 parent x {options.children} children of {options.steps} no-op steps; counted: every "
              f"step row written, the parent's {PARENT_ROWS} and each child's {bench.child_rows} (Start, "
              f"{options.steps} body, Done) = {bench.rows:,} rows, one transaction each; timed from the start to "
              f"the parent's last row")
    out.write(f"executors:     inline: all in this process; threadpool: W threads here, each with its own "
              f"connection; celery: W worker processes (--pool solo --concurrency 1), broker {options.broker}")
    runs = "1 run" if options.repeat == 1 else f"{options.repeat} runs"
    out.write(f"repeats:       {runs} per line, medians; start = the children step creating the {options.children} "
              f"children (one transaction); join = the last child's last row to the parent's last row (wake-up, "
              f"merge, the step after it, Done); merge = the merge step alone")
    out.write(f"uptime before: {uptime_before}")
    header = (f"  {'executor':<11}{'W':>3}{'steps/s':>10}{'runs (steps/s)':>26}{'x baseline':>12}{'x inline':>10}"
              f"{'start ms':>10}{'join ms':>9}{'merge ms':>10}{'load 1m':>14}")
    out.write(header)
    base_rate = lines[0].median(lambda run: run.rate)
    inline = lines[1].median(lambda run: run.rate)
    for line in lines:
        rate = line.median(lambda run: run.rate)
        runs = " ".join(_rate(run.rate) for run in line.runs)
        engine = line.executor != "baseline"
        start, join, merge, vs_inline = (
            (f"{line.median(lambda run: run.start) * 1000:>10.1f}", f"{line.median(lambda run: run.join) * 1000:>9.1f}",
             f"{line.median(lambda run: run.merge) * 1000:>10.1f}", f"{rate / inline:>10.2f}") if engine
            else (f"{'-':>10}", f"{'-':>9}", f"{'-':>10}", f"{'-':>10}"))
        out.write(f"  {line.executor:<11}{line.workers:>3}{_rate(rate):>10}{runs:>26}{rate / base_rate:>12.2f}"
                  f"{vs_inline}{start}{join}{merge}{_loads(line):>14}")
    if stopped:
        out.write(f"stopped:       {stopped.splitlines()[0]}")
    out.write(f"uptime after:  {uptime_after}")
    cpus = os.cpu_count() or 1
    if load_at_start is not None and load_at_start > cpus / 2:
        out.write(f"machine:       LOADED: the 1-minute load was {load_at_start:.2f} on {cpus} CPUs when the benchmark "
                  f"began; every figure is lower than on a quiet machine, and more workers help less")
    elif load_at_start is not None:
        out.write(f"machine:       quiet: the 1-minute load was {load_at_start:.2f} on {cpus} CPUs when the benchmark "
                  f"began (the load during it is the benchmark's own)")
    if options.keep:
        out.write(f"kept:          {len(bench.created)} parent processes of {bench.parent_name} and their children")


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _loads(line: Line) -> str:
    if line.load_before is None or line.load_after is None:
        return "n/a"
    return f"{line.load_before:.2f}>{line.load_after:.2f}"


def _load() -> float | None:
    with suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"
