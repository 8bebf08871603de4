"""Periodic work of the engine: retrying waiting processes when due, and recovering stalled running ones."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes import engine
from processes.executors import get_executor, submit_after_commit
from processes.models import Process, ProcessLease, ProcessStatus

logger = logging.getLogger(__name__)


def retry_due_processes(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Retry the waiting processes whose next try is due; return their ids.

    Each is claimed under a row lock that skips rows another scheduler holds, so two schedulers never
    retry one process twice.
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []
    retried: list[uuid.UUID] = []
    due = list(
        Process.objects.filter(status=ProcessStatus.WAITING, next_retry_at__lte=now)
        .order_by("next_retry_at")
        .values_list("process_id", flat=True)[:limit]
    )
    for process_id in due:
        with transaction.atomic():
            claimed = (
                Process.objects.select_for_update(skip_locked=True)
                .filter(pk=process_id, status=ProcessStatus.WAITING, next_retry_at__lte=now)
                .exists()
            )
            if not claimed:
                continue
            engine.retry(process_id, by="scheduler")
            submit_after_commit(process_id)
        retried.append(process_id)
        logger.info("process %s: automatic retry of its waiting step", process_id)
    return retried


def _unleased_running(now: datetime) -> object:
    """Running processes no live run holds: no lease, or one that lapsed."""
    live = ProcessLease.objects.filter(process=OuterRef("pk"), expires_at__gte=now)
    return Process.objects.filter(status=ProcessStatus.RUNNING).exclude(Exists(live))


def recover_stalled_processes(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Hand running processes whose run died (its lease lapsed) back to the executor; return their ids.

    A process is only taken once its last change is older than a lease, so one just created and still
    waiting in a queue for its first worker is left to that worker. The executor's run claims the lease
    first: of two sweeps (or a sweep and a late worker) only one runs it.
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []  # a paused engine's processes wait, without a run, for the engine to resume
    grace = now - timedelta(seconds=float(orchestrator_setting("LEASE_SECONDS")))
    stalled = list(
        _unleased_running(now).filter(last_modified_at__lt=grace)
        .order_by("last_modified_at").values_list("process_id", flat=True)[:limit]
    )
    _submit(stalled, "recovered: its run stopped without finishing (lease lapsed)")
    return stalled


def continue_paused_processes(*, limit: int = 1000) -> list[uuid.UUID]:
    """After the engine resumes: hand back every running process that stopped at a step boundary."""
    if engine.engine_paused():
        return []
    waiting = list(_unleased_running(timezone.now()).order_by("last_modified_at")
                   .values_list("process_id", flat=True)[:limit])
    _submit(waiting, "continues: the engine was resumed")
    return waiting


def _submit(process_ids: list[uuid.UUID], why: str) -> None:
    executor = get_executor()
    for process_id in process_ids:
        logger.info("process %s %s", process_id, why)
        try:
            executor.submit(process_id)
        except Exception:  # one process that cannot be handed over must not stop the others
            logger.exception("process %s: could not hand it to the executor", process_id)
