"""The Prometheus metrics of /metrics, read from the database at scrape time (one Collector, cheap indexed queries).

The engine runs in many OS processes, and /metrics is served by one of them: counters kept in memory
would only see that one. Everything here comes from the database, the one source of truth: gauges from
small indexed reads, the monotonic totals from the step log folded into stored totals
(processes/step_metrics.py). A snapshot is read first, then rendered: a scrape whose reads fail answers
503 instead of half a page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from processes import step_metrics
from processes.engine_settings import EngineState, EngineStatus, engine_status
from processes.models import FINISHED, Process, ProcessLease, ProcessStatus, WorkflowStepTotals
from processes.scheduler_ticks import last_tick
from processes.status_counts import status_counts

logger = logging.getLogger(__name__)

# Every status but the finished ones, per workflow: these are few (the index on status finds them), while
# counting the completed processes of each workflow would read most of the table at every scrape.
UNFINISHED = [status for status in ProcessStatus.values if status not in FINISHED]


@dataclass(frozen=True)
class Snapshot:
    unfinished: list[tuple[str, str, int]]  # (status, workflow, processes)
    by_status: dict[str, int]
    engine: EngineStatus
    waiting_for_worker: int
    oldest_waiting_since: datetime | None
    scheduler_last_tick: datetime | None
    step_totals: list[WorkflowStepTotals]
    taken_at: datetime


def take_snapshot() -> Snapshot:
    """Fold the new step rows into the totals, then read every metric (a few small queries)."""
    step_metrics.fold()
    now = timezone.now()
    unfinished = [
        (status, workflow, n)
        for status, workflow, n in Process.objects.filter(status__in=UNFINISHED).order_by()
        .values_list("status", "workflow__name").annotate(n=Count("pk")).order_by("status", "workflow__name")
    ]
    # Handed to the executor and not yet taken by a run: a queued run record (processes.leases).
    waiting = ProcessLease.objects.filter(owner="", process__status=ProcessStatus.RUNNING).aggregate(
        n=Count("pk"), oldest=Min("queued_at"))
    tick = last_tick()
    return Snapshot(
        unfinished=unfinished, by_status=status_counts(), engine=engine_status(),
        waiting_for_worker=waiting["n"], oldest_waiting_since=waiting["oldest"],
        scheduler_last_tick=tick.last_tick_at if tick is not None else None,
        step_totals=step_metrics.totals(), taken_at=now,
    )


class SnapshotCollector(Collector):
    """Renders one Snapshot as metric families (the registry calls collect() once per render)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        processes = GaugeMetricFamily(
            "orchestrator_processes",
            "Processes not finished (every status but completed and aborted), by status and workflow.",
            labels=["status", "workflow"])
        for status, workflow, n in s.unfinished:
            processes.add_metric([status, workflow], n)
        yield processes

        by_status = GaugeMetricFamily("orchestrator_processes_by_status",
                                      "Processes by status, finished ones included (all workflows).",
                                      labels=["status"])
        for status, n in sorted(s.by_status.items()):
            by_status.add_metric([status], n)
        yield by_status

        yield from self._step_totals()

        yield GaugeMetricFamily("orchestrator_engine_paused", "1 while the engine is paused (or pausing), else 0.",
                                value=1 if s.engine.paused else 0)
        state = GaugeMetricFamily(
            "orchestrator_engine_state",
            "The engine's state: 1 for the current one (running, pausing, paused), 0 for the others.",
            labels=["state"])
        for value in EngineState.values:
            state.add_metric([value], 1 if s.engine.status == value else 0)
        yield state
        yield GaugeMetricFamily("orchestrator_runs_in_progress",
                                "Processes a run holds right now (a live lease, or a step in progress).",
                                value=s.engine.running_processes)

        yield GaugeMetricFamily("orchestrator_processes_waiting_for_worker",
                                "Running processes handed to the executor that no worker has taken yet.",
                                value=s.waiting_for_worker)
        oldest = (s.taken_at - s.oldest_waiting_since).total_seconds() if s.oldest_waiting_since else 0.0
        yield GaugeMetricFamily("orchestrator_oldest_waiting_for_worker_age_seconds",
                                "How long the process waiting longest for a worker has waited (0 when none does).",
                                value=max(oldest, 0.0))
        yield GaugeMetricFamily("orchestrator_scheduler_last_tick_timestamp_seconds",
                                "When a scheduler last completed a tick (UNIX time; 0 if none ever did).",
                                value=s.scheduler_last_tick.timestamp() if s.scheduler_last_tick else 0.0)

    def _step_totals(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "orchestrator_step_duration_seconds",
            "How long steps took to run, by workflow (every step-log row but the arrival of a callback's answer).",
            labels=["workflow"])
        failures = CounterMetricFamily("orchestrator_process_failures",
                                       "Times a process of the workflow failed (went to status failed).",
                                       labels=["workflow"])
        deadlines = CounterMetricFamily("orchestrator_callback_deadlines_passed",
                                        "Callback steps failed because their deadline passed without an answer.",
                                        labels=["workflow"])
        completions = CounterMetricFamily("orchestrator_process_completions",
                                          "Processes of the workflow that completed.", labels=["workflow"])
        for row in self.snapshot.step_totals:
            cumulative, buckets = 0, []
            counts = list(row.buckets) + [0] * (len(step_metrics.BUCKETS) + 1 - len(row.buckets))
            for bound, n in zip(step_metrics.BUCKETS, counts, strict=False):
                cumulative += n
                buckets.append((_bound(bound), cumulative))
            buckets.append(("+Inf", row.steps))
            durations.add_metric([row.workflow], buckets, sum_value=row.seconds)
            failures.add_metric([row.workflow], row.failures)
            deadlines.add_metric([row.workflow], row.deadlines_passed)
            completions.add_metric([row.workflow], row.completions)
        yield from (durations, failures, deadlines, completions)


def _bound(value: float) -> str:
    return repr(float(value))


def render(snapshot: Snapshot) -> bytes:
    """The snapshot in the Prometheus text format (a registry of its own: none of this process's own metrics,
    which would describe one web process among many)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
