"""The admin index's dashboard data: the counts to watch, and the processes completed and failed per hour or day."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection
from django.db.models import Count
from django.db.models.functions import TruncDate, TruncHour
from django.urls import reverse
from django.utils import timezone

from processes.models import Process, ProcessStatus
from processes.status_counts import status_counts

logger = logging.getLogger(__name__)

P = ProcessStatus

# The counts on the dashboard, in this order: failed and waiting need a human (highlighted when any);
# the others say what is in flight or parked.
WATCHED: tuple[str, ...] = (P.FAILED, P.WAITING, P.AWAITING_CALLBACK, P.AWAITING_CHILDREN, P.SUSPENDED, P.RUNNING)
NEEDS_A_HUMAN: tuple[str, ...] = (P.FAILED, P.WAITING)
# What the chart counts: processes that ended (or stopped for a human) with these statuses now.
SERIES: tuple[str, ...] = (P.COMPLETED, P.FAILED)


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int
    url: str
    attention: bool


def watched_counts() -> list[StatusCount]:
    """The watched statuses with their counts, each linking to the process list filtered by it.

    From the trigger-kept counters (processes.status_counts): one small read however many processes there are.
    """
    counts = status_counts()
    changelist = reverse("admin:processes_process_changelist")
    return [
        StatusCount(
            status=status, label=P(status).label, count=counts.get(status, 0),
            url=f"{changelist}?status__exact={status}",
            attention=status in NEEDS_A_HUMAN and counts.get(status, 0) > 0,
        )
        for status in WATCHED
    ]


@dataclass(frozen=True)
class Period:
    """One way to cut the chart: `buckets` of `step` each, the last one the current (unfinished) one."""

    key: str
    label: str
    window: str
    buckets: int
    step: timedelta


PERIODS: dict[str, Period] = {
    "hour": Period("hour", "per hour, last 48 hours", "last 48 hours", 48, timedelta(hours=1)),
    "day": Period("day", "per day, last 7 days", "last 7 days", 7, timedelta(days=1)),
}
DEFAULT_PERIOD = "hour"


@dataclass(frozen=True)
class Bucket:
    """One hour or day of the chart, in the current time zone; `current` is the one still going on."""

    start: datetime
    end: datetime
    counts: dict[str, int]
    current: bool

    @property
    def completed(self) -> int:
        return self.counts.get(P.COMPLETED, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(P.FAILED, 0)


def period_of(key: str | None) -> Period:
    """The period a `?chart=` value names; anything else (missing, misspelt) is the default."""
    return PERIODS.get(key or "", PERIODS[DEFAULT_PERIOD])


def bucket_starts(period: Period, now: datetime) -> list[datetime]:
    """The start of each bucket, oldest first, the last one holding `now`.

    Hours are counted in UTC (then shown in local time): a local hour can repeat or be skipped when the
    clocks change, a UTC hour never. Days are local days, from local midnight to local midnight: wall-clock
    arithmetic on an aware datetime keeps midnight at midnight across a clock change.
    """
    if period.key == "hour":
        last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    else:
        last = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return [last - period.step * back for back in range(period.buckets - 1, -1, -1)]


def settled_field() -> str:
    """When a process stopped running: settled_at (indexed, kept by a trigger) on PostgreSQL. SQLite has no
    trigger and leaves it NULL; there last_modified_at says the same for a process that is not running."""
    return "settled_at" if connection.vendor == "postgresql" else "last_modified_at"


def settled_per_period(period: Period, *, now: datetime | None = None) -> list[Bucket]:
    """Processes now completed or failed that settled in each bucket of the period (zero for none).

    One grouped query over the window, served by the process_settled index for its range. A process is
    counted once, at its last settling with its status now: one that failed and then completed after a
    retry counts as completed, when it completed.
    """
    now = now or timezone.now()
    starts = bucket_starts(period, now)
    ends = [*starts[1:], starts[-1] + period.step]
    field = settled_field()
    if period.key == "hour":
        bucket = TruncHour(field, tzinfo=UTC)
    else:
        bucket = TruncDate(field, tzinfo=timezone.get_current_timezone())
    rows = (
        Process.objects.order_by()
        .filter(**{f"{field}__gte": starts[0], f"{field}__lt": ends[-1]}, status__in=SERIES)
        .annotate(bucket=bucket)
        .values_list("bucket", "status")
        .annotate(n=Count("pk"))
    )
    found: dict[tuple[datetime | date, str], int] = {(key, status): n for key, status, n in rows}
    buckets = []
    for start, end in zip(starts, ends, strict=True):
        key = start if period.key == "hour" else start.date()
        buckets.append(Bucket(
            start=timezone.localtime(start), end=timezone.localtime(end),
            counts={status: found.get((key, status), 0) for status in SERIES},
            current=start <= now < end,
        ))
    return buckets
