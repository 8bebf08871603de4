"""Periodic work of the engine: retrying waiting processes whose backoff is due."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from processes import engine
from processes.executors import submit_after_commit
from processes.models import Process, ProcessStatus

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
