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
}


class Executor(Protocol):
    def submit(self, process_id: uuid.UUID) -> None:
        """Run the process (now or later, here or elsewhere) until it stops."""


def get_executor() -> Executor:
    name = str(orchestrator_setting("EXECUTOR"))
    return import_string(EXECUTORS.get(name, name))()


def submit_after_commit(process_id: uuid.UUID) -> None:
    """Hand the process to the executor once the transaction that created or resumed it has committed.

    Before the commit a worker would not see the process (or its new status) yet.
    """
    executor = get_executor()
    transaction.on_commit(lambda: executor.submit(process_id), robust=False)
