"""Executors run processes outside (or inside) the request that started them; chosen by ORCHESTRATOR["EXECUTOR"]."""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from orchestrator_site.conf import orchestrator_setting
from processes.errors import ExecutorUnavailable

logger = logging.getLogger(__name__)

EXECUTORS = {
    "inline": "processes.executors.inline.InlineExecutor",
    "threadpool": "processes.executors.threadpool.ThreadpoolExecutor",
    "celery": "processes.executors.celery.CeleryExecutor",
}


class Executor(Protocol):
    def submit(self, process_id: uuid.UUID) -> object:
        """Run the process (now or later, here or elsewhere) until it stops.

        An executor that cannot take it (its broker is down) raises ExecutorUnavailable. An executor may
        also have `check_available()`, called before the process is written, raising the same.
        """


def get_executor() -> Executor:
    name = str(orchestrator_setting("EXECUTOR"))
    return import_string(EXECUTORS.get(name, name))()


def submit_after_commit(process_id: uuid.UUID) -> None:
    """Hand the process to the executor once the transaction that created or resumed it has committed.

    Before the commit a worker would not see the process (or its new status) yet. If the executor
    cannot be reached, say so (ExecutorUnavailable, 503) and leave no process that nobody will run:
    checked here, inside the caller's transaction, the error rolls the start (or resume, or retry)
    back; if the hand-over still fails after the commit, the process is failed with the reason.
    """
    executor = get_executor()
    check = getattr(executor, "check_available", None)
    if check is not None:
        check()

    def submit() -> None:
        try:
            executor.submit(process_id)
        except ExecutorUnavailable as exc:
            fail_unsubmitted(process_id, str(exc))
            raise

    transaction.on_commit(submit, robust=False)


def fail_unsubmitted(process_id: uuid.UUID | str, reason: str) -> None:
    """Fail a process that was committed as running but could not be handed to any worker.

    It can then be retried (POST /api/processes/{id}/retry/) once the executor is back; nothing ran.
    """
    from processes.models import Process, ProcessStatus

    with transaction.atomic():
        process = Process.objects.select_for_update().filter(pk=process_id).first()
        if process is None or process.status != ProcessStatus.RUNNING:
            return  # someone ran it or changed it meanwhile: not ours to fail
        process.fail(f"not started: {reason}")
        process.last_modified_at = timezone.now()
        process.save(update_fields=["status", "failed_reason", "traceback", "last_modified_at"])
    logger.error("process %s: could not be handed to the executor, failed it: %s", process_id, reason)
