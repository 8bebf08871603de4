"""Cumulative step totals per workflow (durations, failures, deadlines passed), folded from the step log at scrape time.

The engine runs in many OS processes (web workers, the thread pool, Celery workers on other machines);
the step log in the database is the one place that sees all their steps. So nothing is counted while a
step runs (the engine's per-step transaction does no more work): each scrape of /metrics folds the
ProcessStep rows added since a stored cursor into stored totals (WorkflowStepTotals), which only ever
grow, even when task_clean_up_tasks deletes the rows they came from.

- One fold at a time: the fold locks the cursor row with SKIP LOCKED; a scrape that finds it locked
  folds nothing and reads the totals as they were last committed (never counting a row twice).
- All or nothing: totals and cursor are written in the transaction that read the rows; a fold that fails
  halfway rolls back and the next one folds the same rows again.
- Bounded: at most MAX_ROWS_PER_FOLD rows per scrape; a backlog is caught up over the next scrapes.
- Ids are handed out when a row is inserted but become visible when its transaction commits, so a row
  may appear after rows with higher ids were folded. An id skipped over is kept as a gap and looked for
  again at each fold until GAP_WAIT after the row that followed it was written (a rolled-back insert
  leaves a gap that never fills).
- Counting starts at the first fold (from the newest row then): earlier steps are not counted, so the
  counters start at 0 rather than catching up on years of history in a burst that would look like now.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from processes.models import ProcessStep, StepMetricsCursor, StepStatus, WorkflowStepTotals

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the step duration histogram's buckets: steps take from milliseconds (database
# writes) to minutes (external systems). Fixed: the stored counts are per bucket of exactly these bounds.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                              900.0, 3600.0)
MAX_ROWS_PER_FOLD = 50_000
BATCH = 10_000
# A step row is inserted at the end of its step's transaction, which commits right after: a gap still
# empty this long after the row that followed it was written is a rolled-back insert (or a row deleted
# before it was counted). Generous, for clocks of machines that differ by a little.
GAP_WAIT = timedelta(minutes=10)
# At most this many gaps are remembered (the oldest are given up first): a bound on the cursor row.
MAX_GAPS = 1000
CALLBACK_TIMEOUT = "CallbackTimeout"  # the error_type of the failed row callbacks.expire() writes

_ROW = ("id", "process__workflow__name", "status", "error_type", "started_at", "completed_at")


@dataclass
class _Totals:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    steps: int = 0
    seconds: float = 0.0
    failures: int = 0
    deadlines_passed: int = 0
    completions: int = 0

    def add(self, status: str, error_type: str, started: datetime, completed: datetime) -> None:
        if status == StepStatus.FAILED:
            # Every transition of a process to failed writes exactly one failed row (a retrystep's failed
            # try that will be retried writes a `waiting` one).
            self.failures += 1
            if error_type == CALLBACK_TIMEOUT:
                self.deadlines_passed += 1
        elif status == StepStatus.COMPLETE:
            self.completions += 1
        if status == StepStatus.CALLBACK:
            return  # an external system's answer arriving, not a step that ran
        # Never negative (a clock stepped back while the step ran): the sum only grows.
        seconds = max((completed - started).total_seconds(), 0.0)
        self.steps += 1
        self.seconds += seconds
        self.buckets[bucket_of(seconds)] += 1


def bucket_of(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


@dataclass(frozen=True)
class FoldResult:
    folded: bool  # False: another scrape was folding, nothing done
    rows: int = 0
    gaps: int = 0


def _ensure_cursor() -> None:
    # The row exists before anyone locks it; two first scrapes at once insert it once.
    StepMetricsCursor.objects.bulk_create([StepMetricsCursor(id=1)], ignore_conflicts=True)


def fold(now: datetime | None = None, *, max_rows: int = MAX_ROWS_PER_FOLD) -> FoldResult:
    """Fold the step rows added since the last fold into the stored totals (see the module's docstring)."""
    now = now or timezone.now()
    _ensure_cursor()
    with transaction.atomic():
        cursor = StepMetricsCursor.objects.select_for_update(skip_locked=True).filter(id=1).first()
        if cursor is None:
            return FoldResult(False)  # another scrape is folding right now
        if cursor.last_step_id is None:
            cursor.last_step_id = _newest_id()
            cursor.gaps, cursor.folded_at, cursor.counting_since = [], now, now
            cursor.save()
            logger.info("step metrics: counting steps from step row %d on", cursor.last_step_id)
            return FoldResult(True)
        totals: dict[str, _Totals] = defaultdict(_Totals)
        gaps, rows = _fill_gaps(cursor.gaps, totals, max_rows)
        last, new_rows, new_gaps = _fold_new(cursor.last_step_id, totals, max_rows - rows, now)
        gaps = [gap for gap in gaps + new_gaps if gap[2] > now.timestamp()]
        if len(gaps) > MAX_GAPS:
            logger.warning("step metrics: %d gaps in the step ids; giving up the oldest", len(gaps) - MAX_GAPS)
            gaps = gaps[-MAX_GAPS:]
        _store(totals)
        cursor.last_step_id, cursor.gaps, cursor.folded_at = last, gaps, now
        cursor.save(update_fields=["last_step_id", "gaps", "folded_at"])
    return FoldResult(True, rows + new_rows, len(gaps))


def _newest_id() -> int:
    """Where counting starts: the newest id handed out so far. On PostgreSQL the sequence's (ids taken by
    rows not yet committed, or rolled back, are before the start: no gap to wait for), else the newest row's."""
    newest = ProcessStep.objects.aggregate(newest=Max("id"))["newest"] or 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
                           [ProcessStep._meta.db_table])
            newest = max(newest, cursor.fetchone()[0] or 0)
    return newest


def _add(row: tuple[Any, ...], totals: dict[str, _Totals]) -> None:
    _, workflow, status, error_type, started, completed = row
    totals[workflow].add(status, error_type, started, completed)


def _fill_gaps(gaps: list[list[Any]], totals: dict[str, _Totals], limit: int) -> tuple[list[list[Any]], int]:
    """Fold the rows that appeared in earlier gaps; return the gaps left (split around the rows found)."""
    if not gaps or limit <= 0:
        return gaps, 0
    where = Q()
    for first, last, _ in gaps:
        where |= Q(id__gte=first, id__lte=last)
    found = list(ProcessStep.objects.filter(where).order_by("id").values_list(*_ROW)[:limit])
    for row in found:
        _add(row, totals)
    ids = [row[0] for row in found]
    left: list[list[Any]] = []
    for first, last, until in gaps:
        start = first
        for step_id in ids:
            if first <= step_id <= last:
                if step_id > start:
                    left.append([start, step_id - 1, until])
                start = step_id + 1
        if start <= last:
            left.append([start, last, until])
    return left, len(found)


def _fold_new(after: int, totals: dict[str, _Totals], limit: int,
              now: datetime) -> tuple[int, int, list[list[Any]]]:
    """Fold rows with ids above `after`, in id order, at most `limit`; return the new cursor, the number of
    rows and the gaps skipped over (ids not visible yet, kept until GAP_WAIT after the row after them)."""
    folded, gaps, expected = 0, [], after + 1
    while folded < limit:
        batch = list(ProcessStep.objects.filter(id__gt=expected - 1).order_by("id")
                     .values_list(*_ROW)[:min(BATCH, limit - folded)])
        for row in batch:
            step_id, completed = row[0], row[5]
            until = (completed + GAP_WAIT).timestamp()
            if step_id > expected and until > now.timestamp():
                gaps.append([expected, step_id - 1, until])
            _add(row, totals)
            expected = step_id + 1
        folded += len(batch)
        if len(batch) < BATCH:
            break
    return expected - 1, folded, gaps


def _store(totals: dict[str, _Totals]) -> None:
    """Add the folded counts to the stored totals (the cursor's lock keeps every other fold out)."""
    if not totals:
        return
    stored = {row.workflow: row for row in WorkflowStepTotals.objects.filter(workflow__in=list(totals))}
    for workflow, new in sorted(totals.items()):
        row = stored.get(workflow) or WorkflowStepTotals(workflow=workflow, buckets=[0] * (len(BUCKETS) + 1))
        old = list(row.buckets) + [0] * (len(BUCKETS) + 1 - len(row.buckets))
        row.buckets = [a + b for a, b in zip(old, new.buckets, strict=True)]
        row.steps += new.steps
        row.seconds += new.seconds
        row.failures += new.failures
        row.deadlines_passed += new.deadlines_passed
        row.completions += new.completions
        row.save()


def totals() -> list[WorkflowStepTotals]:
    """The stored totals, per workflow (as last committed)."""
    return list(WorkflowStepTotals.objects.order_by("workflow"))
