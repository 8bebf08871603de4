"""Executors run processes outside (or inside) the request that started them; chosen by ORCHESTRATOR["EXECUTOR"]."""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from django.db import transaction
from django.utils.module_loading import import_string

from orchestrator_site.conf import orchestrator_setting

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

    Before the commit a worker would not see the process (or its new status) yet. If the executor is
    known to be unreachable, say so now (ExecutorUnavailable, 503): checked inside the caller's
    transaction, the error rolls the start (or resume, or retry) back. If the hand-over fails after the
    commit, nothing is lost: the process's queued run record (written in the same transaction) is marked
    due, and the recovery sweep hands it over again, with backoff, until a worker takes it.
    """
    executor = get_executor()
    check = getattr(executor, "check_available", None)
    if check is not None:
        check()

    def submit() -> None:
        try:
            executor.submit(process_id)
        except Exception as exc:
            # Robust on purpose: one hand-over that fails must not stop the others committed with it
            # (Django skips the remaining on-commit callbacks after one raises).
            logger.exception("process %s: could not hand it to the executor; the recovery sweep will", process_id)
            from processes.leases import note_error

            note_error(process_id, f"could not be handed to the executor: {exc}", resend_now=True)

    transaction.on_commit(submit, robust=False)
