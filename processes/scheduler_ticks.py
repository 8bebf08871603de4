"""The scheduler's heartbeat: when a tick last completed (one row, updated by every tick) and whether that is recent."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes.models import SchedulerTick

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def record_tick(*, failed_parts: int = 0, now: datetime | None = None) -> None:
    """Note that a tick just completed: one UPDATE of the heartbeat row (an INSERT only the very first time)."""
    now = now or timezone.now()
    fields = {"last_tick_at": now, "last_tick_by": f"{socket.gethostname()}:{os.getpid()}"[:200],
              "failed_parts": failed_parts}
    if SchedulerTick.objects.filter(id=1).update(**fields):
        return
    # First tick ever; a scheduler ticking at the same moment may insert it first: then update that row.
    SchedulerTick.objects.bulk_create([SchedulerTick(id=1, **fields)], ignore_conflicts=True)
    SchedulerTick.objects.filter(id=1).update(**fields)


def last_tick() -> SchedulerTick | None:
    return SchedulerTick.objects.filter(id=1).first()


def stale_after() -> timedelta:
    """How long without a tick before the scheduler counts as stale: SCHEDULER_STALE_SECONDS, and at least
    three sweep intervals (a tick may take a while: notifications to send, many processes to hand back)."""
    interval = float(orchestrator_setting("SWEEP_INTERVAL_SECONDS"))
    return timedelta(seconds=max(float(orchestrator_setting("SCHEDULER_STALE_SECONDS")), 3 * interval))


def scheduler_required() -> bool:
    """ORCHESTRATOR["SCHEDULER_REQUIRED"]: "auto" means when this process runs the scheduler itself
    (EMBEDDED_SCHEDULER). Then a stale scheduler is this web process's own thread gone, which restarting the
    process mends, and a 503 is what gets it restarted. A scheduler in a process of its own (`run_scheduler`)
    is not this web process's to mend: taking every web server out of service because it stopped would turn
    one stopped background process into a whole outage; its staleness is reported, and alerted on through
    /metrics (orchestrator_scheduler_last_tick_timestamp_seconds)."""
    raw = orchestrator_setting("SCHEDULER_REQUIRED")
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text == "auto":
        return bool(orchestrator_setting("EMBEDDED_SCHEDULER"))
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ImproperlyConfigured(f'ORCHESTRATOR["SCHEDULER_REQUIRED"] = {raw!r}: write "auto", true or false')


@dataclass(frozen=True)
class SchedulerHealth:
    state: str  # "ok" or "stale" (never ticked, or not lately)
    last_tick_at: datetime | None
    required: bool


def scheduler_health(now: datetime | None = None) -> SchedulerHealth:
    """Whether a scheduler completed a tick lately (one read of one row)."""
    now = now or timezone.now()
    row = SchedulerTick.objects.filter(id=1).values_list("last_tick_at", flat=True).first()
    fresh = row is not None and now - row <= stale_after()
    return SchedulerHealth("ok" if fresh else "stale", row, scheduler_required())


@checks.register()
def check_scheduler_required(**kwargs: object) -> list[checks.CheckMessage]:
    """`manage.py check` names a SCHEDULER_REQUIRED that is neither "auto" nor a boolean."""
    try:
        scheduler_required()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="processes.E112")]
    return []
