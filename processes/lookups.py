"""Looking processes up for the engine and its operations: by id (locked or not), their state, their
workflow as declared now, whether that changed under them, and whether the engine is paused."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError

from orchestrator_site.errors import NotFound
from processes import leases, statelog
from processes.dberrors import connection_lost, lock_timed_out
from processes.errors import EnginePaused, IncompatibleWorkflowChange, ProcessBusy, WorkflowRemoved
from processes.models import EngineSettings, Process
from workflows.registry import WorkflowSpec, get_workflow

logger = logging.getLogger(__name__)


def get_process(process_id: uuid.UUID | str, *, lock: bool = False, nowait: bool = False) -> Process:
    """The process with this id (row-locked if asked); NotFound (404), also for a malformed id."""
    queryset = Process.objects.select_related("workflow")
    if lock:
        queryset = queryset.select_for_update(of=("self",), nowait=nowait)
    try:
        return queryset.get(pk=process_id)
    except (Process.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"process {process_id} does not exist", process_id=process_id) from None


def lock_idle(process_id: uuid.UUID | str, action: str) -> Process:
    """Lock a process that no worker is inside a step of; ProcessBusy (409) if one is. Needs a transaction.

    Waits LOCK_WAIT_SECONDS for the row: long enough for another operator's action (a retry committing)
    to finish, so that racing actions see each other's outcome; a step in progress holds it longer, and an
    operator's action must not queue behind a long step: it says so and can be tried again.
    """
    try:
        with leases.lock_wait():
            return get_process(process_id, lock=True)
    except DatabaseError as exc:
        if connection_lost(exc) or not lock_timed_out(exc):
            raise
        raise ProcessBusy(
            f"cannot {action} process {process_id}: a worker is running one of its steps right now"
        ) from None


def current_state(process: Process | uuid.UUID | str) -> dict[str, Any]:
    """The process's state: after its newest log row (a failed row changed nothing: the state its step
    started from). Rebuilt from the last snapshot and the deltas after it, in one query."""
    return statelog.rebuild(process)[0]


def engine_paused() -> bool:
    return EngineSettings.objects.filter(id=1, paused=True).exists()


def check_engine_running(action: str) -> None:
    if engine_paused():
        raise EnginePaused(f"cannot {action}: the engine is paused; resume the engine first")


def spec_of(process: Process, action: str) -> WorkflowSpec:
    """The workflow a process runs, as declared in code now; WorkflowRemoved (409) when it is gone."""
    name = process.workflow.name
    try:
        return get_workflow(name)
    except NotFound:
        raise WorkflowRemoved(
            f"cannot {action} process {process.process_id}: workflow {name} was removed from code (or its "
            f"module no longer imports); abort the process",
            process_id=process.process_id, workflow=name,
        ) from None


def check_version(process: Process, spec: WorkflowSpec, action: str) -> None:
    """Refuse to continue a process whose workflow changed where it has been or is about to go.

    The steps up to and including the one to run next must be the same, by name and position, as
    when the process started; steps after it may have changed (they have not run yet).
    """
    old, new = list(process.workflow_version), spec.version
    upto = process.current_step + 1
    if old[:upto] == new[:upto]:
        if old != new:
            # Compatible: later steps changed. Continue with the new version, and remember it.
            process.workflow_version = new
            process.save(update_fields=["workflow_version", "last_modified_at"])
        return
    changes = []
    for position in range(upto):
        before = old[position] if position < len(old) else None
        after = new[position] if position < len(new) else None
        if before != after:
            changes.append(
                f"step {position + 1} was {before!r}, is now {after!r}" if before and after
                else f"step {position + 1} ({before!r}) was removed" if before
                else f"step {position + 1} ({after!r}) was added"
            )
    raise IncompatibleWorkflowChange(
        f"cannot {action} process {process.process_id}: workflow {spec.name} changed since the process started "
        f"({'; '.join(changes)}); the process stopped at step {upto} ({old[process.current_step]!r} when it "
        f"started), which no longer lines up. Abort it and start a new one",
        process_id=process.process_id,
    )


def step_label(version: list[str], position: int) -> str:
    """A step's name as the process knew it when it started (for messages), or its number."""
    return version[position] if 0 <= position < len(version) else f"step {position + 1}"
