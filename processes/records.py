"""What the engine records beyond a successful step: a step's failure (in full, or minimally when the full
record cannot be written), an abort, and a failure of the engine's own (a run that kept dying, a database
that stayed away). Each ends the process visibly: `failed` or `aborted` with a reason on its row."""

from __future__ import annotations

import logging
import traceback as tb
import uuid
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import NotFound
from processes import groups
from processes.dberrors import connection_lost, drop_connection, storable_text
from processes.lookups import current_state, get_process, step_label
from processes.models import CallbackToken, Process, ProcessLease, ProcessStatus, ProcessStep, StepStatus
from processes.statelog import no_change, to_json
from workflows.dsl import StepKind
from workflows.registry import WorkflowSpec, get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus


class ConnectionLost(Exception):
    """The database connection went away during a step or its record: nothing of the step was kept."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {storable_text(cause, 500).strip()}")
        self.step = step


class Unrecorded(Exception):
    """Not even a minimal record of a step's failure could be written; the run stops holding its lease."""


def abort_locked(process: Process, who: str, reason: str = "") -> str:
    """End a process whose row this transaction holds locked: log who aborted it and why, forget its run.

    One implementation for an operator's abort, an abort that waited for a step to end, and the sweep's.
    """
    text = storable_text(f"aborted by {who}" + (f": {reason}" if reason else ""), 2000)
    now = timezone.now()
    ProcessStep.objects.create(
        process=process, name="Abort", status=StepStatus.ABORT, state=current_state(process), delta=no_change(),
        error=text, created_by=who, started_at=now, completed_at=now, attempt=1,
    )
    process.abort(text)
    process.last_step = "Abort"
    process.last_modified_at = now
    process.save(update_fields=["status", "failed_reason", "next_retry_at", "last_step", "last_modified_at"])
    ProcessLease.objects.filter(process=process).delete()
    groups.forget(process)
    # An awaited callback's token stops working with it.
    CallbackToken.objects.filter(process=process, closed_at__isnull=True).update(
        closed_at=now, closed_reason=text[:500])
    from processes import joins  # joins starts children through the services, which reach this module

    # A child's end wakes its parent when it was the last; a parent's unfinished children are aborted too.
    joins.after_abort(process, who, reason)
    logger.info("process %s: %s", process.process_id, text)
    return text


def let_go_waiting(process: Process) -> bool:
    """A step left its process waiting (input, callback, timer, children) in this transaction: its run record
    goes, so that no run holds it. An abort asked for while that step ran (left on the run record, as the
    step held the process row) is carried out now instead, and True returned: the answer "aborted at the
    step's end" holds for steps that wait too."""
    request = (ProcessLease.objects.select_for_update().filter(process=process, abort_requested_at__isnull=False)
               .values_list("abort_requested_by", "abort_reason").first())
    if request is not None:
        abort_locked(process, request[0] or "?", request[1])
        return True
    ProcessLease.objects.filter(process=process).delete()
    return False


def record_failure(process_id: uuid.UUID | str, exc: BaseException, started: Any,
                   state: dict[str, Any] | None) -> None:
    """Record the step's failure; if that cannot be written, a minimal record; never leave it unexplained.

    A lost connection while recording is like one during the step: the step runs again on a new
    connection. Anything else falls back to the minimal record; if that fails too, Unrecorded.
    """
    try:
        _record_failure(process_id, exc, started, state)
        return
    except Exception as record_exc:
        if connection_lost(record_exc):
            drop_connection()
            raise ConnectionLost("recording its failure", record_exc) from record_exc
        logger.error("process %s: could not record its step's failure (%s: %s); recording a minimal one",
                     process_id, type(record_exc).__name__, record_exc)
        why = record_exc
    try:
        _record_minimal_failure(process_id, exc, why, started)
    except Exception as last:
        if connection_lost(last):
            drop_connection()
            raise ConnectionLost("recording its failure", last) from last
        raise Unrecorded(f"the failure of its step could not be recorded, not even minimally: {last}") from last


def _record_failure(process_id: uuid.UUID | str, exc: BaseException, started: Any,
                    state: dict[str, Any] | None) -> None:
    """In a new transaction (the step's has rolled back): log the failed step and fail the process."""
    message = storable_text(describe(exc))
    trace = storable_text("".join(tb.format_exception(exc)), 100_000)
    logger.warning("process %s: step failed: %s", process_id, message)
    with transaction.atomic():
        process = get_process(process_id, lock=True)
        if process.status != P.RUNNING:
            return  # aborted or handled by someone else meanwhile
        try:
            spec: WorkflowSpec | None = get_workflow(process.workflow.name)
        except NotFound:
            spec = None  # removed from code: the failure names the step as the process knew it
        step = spec.steps[process.current_step] if spec and process.current_step < len(spec.steps) else None
        name = step.name if step else step_label(process.workflow_version, process.current_step)
        if step is not None and step.kind == StepKind.GROUP:
            # The sub-step that failed is named (workflows.dsl.sub_step_label); the group's place goes: a retry starts
            # it again at its first sub-step, from the state before the group (`state`: the log's).
            step, name = groups.failed_in(process, step)
        if state is None:
            state = current_state(process)
        retrying = step is not None and step.kind == StepKind.RETRY
        max_tries = int(orchestrator_setting("RETRYSTEP_MAX_TRIES"))
        ProcessStep.objects.create(
            process=process, name=name,
            status=StepStatus.WAITING if retrying and process.current_attempt < max_tries else StepStatus.FAILED,
            state=state, delta=no_change(), error=message, error_type=type(exc).__qualname__, traceback=trace,
            created_by=process.acting_user, started_at=started, completed_at=timezone.now(),
            attempt=process.current_attempt,
        )
        reason = storable_text(f"{name}: {message}")
        if retrying and process.current_attempt < max_tries:
            delay = min(
                float(orchestrator_setting("RETRYSTEP_BACKOFF_SECONDS")) * 2 ** (process.current_attempt - 1),
                float(orchestrator_setting("RETRYSTEP_BACKOFF_MAX_SECONDS")),
            )
            process.wait(
                f"{reason} (try {process.current_attempt} of {max_tries}; next in {delay:g}s)", trace,
                timezone.now() + timedelta(seconds=delay),
            )
        else:
            if retrying:
                reason = f"{reason} (gave up after {max_tries} tries)"
            process.fail(reason, trace)
        process.current_attempt += 1
        process.last_step = name
        process.last_modified_at = timezone.now()
        process.save(update_fields=[
            "status", "failed_reason", "traceback", "next_retry_at", "current_attempt", "last_step",
            "last_modified_at",
        ])
        _abort_if_requested(process)


def _abort_if_requested(process: Process) -> None:
    """An abort asked for while the step ran still applies now that the step failed."""
    request = ProcessLease.objects.filter(process=process, abort_requested_at__isnull=False).values_list(
        "abort_requested_by", "abort_reason").first()
    if request is not None:
        abort_locked(process, request[0] or "?", request[1])


def _record_minimal_failure(process_id: uuid.UUID | str, exc: BaseException, why: BaseException,
                            started: Any) -> None:
    """The fallback record: sanitised short text and no state from Python (what Python holds may be what
    could not be stored): the row changes nothing, so the state stays what the log has."""
    message = (f"{type(exc).__name__}: {describe(exc)} (the full record of this failure could not be written: "
               f"{type(why).__name__}: {why})")
    fail_running(process_id, message, error_type=type(exc).__qualname__[:200], started=started)


def _insert_failed_row(process: Process, name: str, message: str, error_type: str, started: Any) -> None:
    """A failed row that changed nothing (its state is that of the row before it, read through the log), in
    plain SQL with only text and numbers from Python: what Python holds may be what could not be stored."""
    table = connection.ops.quote_name(ProcessStep._meta.db_table)

    def col(field: str) -> str:
        return connection.ops.quote_name(ProcessStep._meta.get_field(field).column)

    columns = ["process", "name", "status", "delta", "error", "error_type", "traceback", "created_by",
               "started_at", "completed_at", "attempt"]
    when = ProcessStep._meta.get_field("started_at")
    pid = Process._meta.pk.get_db_prep_value(process.process_id, connection)
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    sql = (
        f"INSERT INTO {table} ({', '.join(col(c) for c in columns)}) "
        f"VALUES (%s, %s, %s, %s{cast}, %s, %s, '', %s, %s, %s, %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [
            pid, name, StepStatus.FAILED, to_json(no_change()), message, error_type,
            storable_text(process.acting_user, 150), when.get_db_prep_value(started, connection),
            when.get_db_prep_value(timezone.now(), connection), process.current_attempt,
        ])


def fail_running(process_id: uuid.UUID | str, reason: str, error_type: str = "", started: Any = None) -> bool:
    """Fail a running process with a short reason only (no state, no traceback from Python); True if done.

    For a reason of the engine's own (a run that kept dying, a database that stayed away, no worker) and
    for the minimal record of a step's failure. The reason is logged on a failed row of the step the
    process is at, which changes nothing in the state, and given with that step's name on
    the process row. Its run record goes with it.
    """
    with transaction.atomic():
        process = get_process(process_id, lock=True)
        if process.status != P.RUNNING:
            return False
        name = storable_text(step_label(process.workflow_version, process.current_step), 200)
        reason = storable_text(reason, 4000)
        _insert_failed_row(process, name, reason, error_type, started or timezone.now())
        process.fail(f"{name}: {reason}")
        process.current_attempt += 1
        process.last_step = name
        process.last_modified_at = timezone.now()
        process.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "current_attempt",
                                    "last_step", "last_modified_at"])
        logger.error("process %s: failed by the engine: %s", process_id, reason)
        # An abort asked for while the step ran is carried out as on any failure: the operator asked for
        # the process to end, and a failed one would wait for them again.
        if let_go_waiting(process):
            return True
        groups.forget(process)  # a retry starts a group it was in again at its first sub-step
    return True


def give_up_on_database(process_id: uuid.UUID | str, exc: ConnectionLost, times: int) -> bool:
    """After DB_RECONNECT_TRIES lost connections in a row: fail the process saying so (True), if the
    database lets us; otherwise (False) the lease lapses and the recovery sweep takes it from there."""
    reason = (
        f"lost the database connection {times} times in a row while running this step "
        f"(last: {str(exc).partition(': ')[2]}); nothing of the step was kept. Retry the process once the "
        f"database is reachable again"
    )
    try:
        fail_running(process_id, reason, error_type="ConnectionLost")
        return True
    except DatabaseError as error:
        drop_connection()
        logger.critical("process %s: %s; could not record it either (%s)", process_id, reason, error)
        return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, TransactionManagementError):
        return (
            f"the step tried to commit or end its transaction ({exc}). A step runs in one transaction "
            f"together with its log entry and cannot commit part of its work: remove transaction.commit() "
            f"(or set_autocommit/rollback) from the step"
        )
    if isinstance(exc, NotFound) and exc.context.get("workflow"):
        return (f"workflow {exc.context['workflow']} was removed from code (or its module no longer imports) "
                f"while the process ran; abort the process")
    if isinstance(exc, DatabaseError):
        return f"database error: {exc}".strip()
    text = str(exc).strip()
    return text if text else type(exc).__name__
