"""The engine's pause switch: pause and resume (with who and when), and whether it is running, pausing or paused."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import Count, Q
from django.utils import dateformat, timezone

from processes.leases import rows_in_use
from processes.models import EngineSettings, ProcessLease, ProcessStatus
from subscriptions.lifecycle import actor_name

logger = logging.getLogger(__name__)


class EngineState(models.TextChoices):
    RUNNING = "running", "running"
    # Paused, but some process is still in the middle of a step: it stops before its next one.
    PAUSING = "pausing", "pausing"
    PAUSED = "paused", "paused"


@dataclass(frozen=True)
class EngineStatus:
    paused: bool
    status: str
    running_processes: int
    changed_by: str
    changed_at: datetime | None


def engine_status() -> EngineStatus:
    """Paused or not, the processes still running, and who last switched the engine (a few reads, no write)."""
    # Read without get_or_create: a status read (health checks, GETs) must not write.
    row = EngineSettings.objects.filter(id=1).values_list("paused", "changed_by", "changed_at").first()
    paused, changed_by, changed_at = row if row is not None else (False, "", None)
    # Running means a run holds it: its lease is live, or a step of it is in progress (its row is locked),
    # however long ago its lease lapsed. A process stopped at a step boundary by a pause keeps the status
    # "running" but has no run, and does not keep the engine "pausing"; nor does one waiting for a worker.
    now = timezone.now()
    claimed = ProcessLease.objects.exclude(owner="")
    counts = claimed.aggregate(live=Count("pk", filter=Q(expires_at__gte=now)),
                               lapsed=Count("pk", filter=Q(expires_at__lt=now)))
    running = counts["live"]
    if counts["lapsed"]:  # rare: a long step, or a run that died; look closer only then
        lapsed = claimed.filter(expires_at__lt=now, process__status=ProcessStatus.RUNNING)
        running += len(rows_in_use(lapsed.values_list("process_id", flat=True)))
    state = EngineState.RUNNING if not paused else EngineState.PAUSING if running else EngineState.PAUSED
    return EngineStatus(bool(paused), str(state), running, changed_by, changed_at)


@dataclass(frozen=True)
class EnginePause:
    """Who paused the engine and when: what the admin's banner and disabled Start buttons say."""

    by: str
    since: datetime | None

    def reason(self) -> str:
        """Why nothing can start, in one line: "the engine is paused (by alice since 2026-03-03 02:14 UTC): ..."."""
        when = dateformat.format(timezone.localtime(self.since), "Y-m-d H:i T") if self.since else "an unknown time"
        who = self.by or "an unknown user"
        return f"the engine is paused (by {who} since {when}): nothing can start until it is resumed"


def engine_pause() -> EnginePause | None:
    """Who paused the engine and since when, or None while it runs: one read of one row (no lease counts)."""
    row = EngineSettings.objects.filter(id=1, paused=True).values_list("changed_by", "changed_at").first()
    return EnginePause(*row) if row is not None else None


def set_engine_paused(paused: bool, *, by: Any = None) -> EngineStatus:
    """Pause (True) or resume (False) the engine, recording who did it and when; the same value changes nothing.

    A paused engine refuses to start, resume or retry processes, and a running process stops before its
    next step (so the engine is "pausing" until none is running).
    """
    with transaction.atomic():
        EngineSettings.objects.get_or_create(id=1)
        # Lock the row: two staff switching at once leave one consistent who/when, not a mix.
        settings = EngineSettings.objects.select_for_update().get(id=1)
        if settings.paused != paused:
            settings.paused = paused
            settings.changed_by = actor_name(by)
            settings.changed_at = timezone.now()
            settings.save(update_fields=["paused", "changed_by", "changed_at"])
            logger.info("engine %s by %s", "paused" if paused else "resumed", settings.changed_by)
            if not paused:
                # Processes that stopped at a step boundary go on, once the switch is committed.
                from processes.recovery import continue_paused_processes

                transaction.on_commit(continue_paused_processes)
    return engine_status()


def pause_engine(*, by: Any = None) -> EngineStatus:
    return set_engine_paused(True, by=by)


def resume_engine(*, by: Any = None) -> EngineStatus:
    return set_engine_paused(False, by=by)
