"""The engine: runs a process's steps, one database transaction per step, and keeps the state log.

The contract (DESIGN.md, "The execution contract"):
- One step = one transaction: lock the process row, check the engine is not paused and the process is
  still running at the expected position, run the step function, insert its log row with the new state,
  update the process row. The step's own writes, the log row and the process update commit together.
- A failing step leaves no trace of its work: its transaction rolls back, then a second transaction
  records the `failed` row (error, exception class, traceback, attempt) and fails the process (or puts
  it in `waiting` for a retrystep).
- A retry runs the failed step again from the state of the last successful step.
"""

from __future__ import annotations

import logging
import traceback as tb
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes import steplog
from processes.errors import (
    EnginePaused,
    IncompatibleWorkflowChange,
    ProcessBusy,
    StepError,
    WrongProcessStatus,
)
from processes.executors import get_executor
from processes.models import (
    ABORTABLE,
    RETRYABLE,
    EngineSettings,
    InputState,
    InputType,
    Process,
    ProcessLease,
    ProcessStatus,
    ProcessStep,
    StepStatus,
)
from processes.steps import call_step
from subscriptions.lifecycle import actor_name
from workflows.dsl import Step, StepKind
from workflows.forms import validate_input
from workflows.registry import WorkflowSpec, get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus


# --- looking processes up ----------------------------------------------------------------------------
def get_process(process_id: uuid.UUID | str, *, lock: bool = False, nowait: bool = False) -> Process:
    """The process with this id (row-locked if asked); NotFound (404), also for a malformed id."""
    from orchestrator_site.errors import NotFound

    queryset = Process.objects.select_related("workflow")
    if lock:
        queryset = queryset.select_for_update(of=("self",), nowait=nowait)
    try:
        return queryset.get(pk=process_id)
    except (Process.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"process {process_id} does not exist", process_id=process_id) from None


def lock_idle(process_id: uuid.UUID | str, action: str) -> Process:
    """Lock a process that no worker is inside a step of; ProcessBusy (409) if one is. Needs a transaction.

    nowait: an operator's action must not queue behind a long step; it says so and can be tried again.
    """
    try:
        return get_process(process_id, lock=True, nowait=True)
    except DatabaseError:
        raise ProcessBusy(
            f"cannot {action} process {process_id}: a worker is running one of its steps right now"
        ) from None


def current_state(process: Process | uuid.UUID | str) -> dict[str, Any]:
    """The process's state: that of its newest log row (a failed row holds the state it started from)."""
    process_id = process.pk if isinstance(process, Process) else process
    row = ProcessStep.objects.filter(process_id=process_id).order_by("-id").values_list("state", flat=True).first()
    return dict(row or {})


def engine_paused() -> bool:
    return EngineSettings.objects.filter(id=1, paused=True).exists()


def check_engine_running(action: str) -> None:
    if engine_paused():
        raise EnginePaused(f"cannot {action}: the engine is paused; resume the engine first")


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


# --- running steps -----------------------------------------------------------------------------------
@dataclass
class _Outcome:
    keep_going: bool
    state: dict[str, Any] | None = None
    position: int = 0
    released: bool = False  # the last step let the lease go with its own write


def run_process(process_id: uuid.UUID | str) -> None:
    """Run a process's steps until it completes, fails, waits, suspends or is stopped.

    The run holds the process's lease: claimed here (or at creation, for a run in the creating
    process), renewed with every step, let go when the run stops. A process whose lease another live
    run holds is not run twice: this call returns at once (a duplicated or redelivered message).
    """
    # A state remembered at creation is only a hint: the first step uses it only if the process is
    # still at that position under its lock, and reads the log otherwise.
    hint = _FRESH.pop(str(process_id), None)
    if hint is not None:
        position, state, lease = hint
    else:
        position, state, lease = -1, None, steplog.new_lease()
        if not steplog.claim(process_id, lease):
            logger.info("process %s: another run holds it; not running it twice", process_id)
            return
    released = False
    try:
        while True:
            outcome = _run_one_step(process_id, state, position, lease)
            if not outcome.keep_going:
                released = outcome.released
                return
            state, position = outcome.state, outcome.position
    finally:
        if not released:
            steplog.release(process_id, lease)


def _run_one_step(process_id: uuid.UUID | str, state: dict[str, Any] | None, position: int,
                  lease: steplog.Lease) -> _Outcome:
    started = timezone.now()
    try:
        with transaction.atomic():
            # Lock first, then run the step: a second runner of the same process waits here and
            # then sees the position moved on, so no step runs twice.
            locked = steplog.lock(process_id)
            if locked is None or locked.engine_paused or locked.status != P.RUNNING:
                return _Outcome(False)
            spec = get_workflow(locked.workflow_name)
            at = locked.current_step
            if at >= len(spec.steps):
                raise StepError(f"process is past the last step of {spec.name} (step {at + 1})")
            step = spec.steps[at]
            expected = locked.workflow_version[at] if at < len(locked.workflow_version) else None
            if expected != step.name:
                raise StepError(
                    f"workflow {spec.name} changed under the running process: step {at + 1} "
                    f"is now {step.name!r}, was {expected!r}"
                )
            if state is None or position != at:
                # First step of this run, or someone else moved the process on: read the state.
                state = current_state(process_id)
            return _execute(locked, step, state, started, lease)
    except Exception as exc:
        _record_failure(process_id, exc, started, state)
        return _Outcome(False)


def _execute(locked: steplog.Locked, step: Step, state: dict[str, Any], started: Any,
             lease: steplog.Lease) -> _Outcome:
    """Run `step` inside the current transaction, then log it and move the process on."""
    if step.kind in (StepKind.INPUT, StepKind.ABORT) and (step.condition is None or step.condition(state)):
        return _stop_at(locked, step, state, started)
    if step.condition is not None and not step.condition(state):
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.SKIPPED, state=state,
                        started=started, finished=timezone.now(), lease=lease)
        return _Outcome(True, state, locked.current_step + 1)

    new_state = call_step(step, state, acting_user=locked.acting_user)

    if step.kind == StepKind.DONE:
        # The transition method decides the new status (and refuses an illegal one); the write is
        # the same single statement as any step's.
        process = Process.from_db(None, ["process_id", "status"], [locked.process_id, locked.status])
        process.complete()
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.COMPLETE, state=new_state,
                        started=started, finished=timezone.now(), new_status=process.status, lease=lease,
                        last=True)
        return _Outcome(False, released=True)
    steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, state=new_state,
                    started=started, finished=timezone.now(), lease=lease)
    return _Outcome(True, new_state, locked.current_step + 1)


def _stop_at(locked: steplog.Locked, step: Step, state: dict[str, Any], started: Any) -> _Outcome:
    """An input step (suspend for input) or an abort step (end the process): rare, so through the ORM."""
    process = get_process(locked.process_id)  # its row is already locked by this transaction
    if step.kind == StepKind.INPUT:
        process.suspend()
        row_status, fields = StepStatus.SUSPEND, ["status", "last_step", "last_modified_at"]
    else:
        process.abort(f"the workflow aborted at step {step.name!r}")
        row_status = StepStatus.ABORT
        fields = ["status", "last_step", "failed_reason", "next_retry_at", "last_modified_at"]
    _log(process, step, row_status, state, started)
    process.last_step = step.name
    process.last_modified_at = timezone.now()
    process.save(update_fields=fields)
    return _Outcome(False)


def _log(process: Process, step: Step, status: str, state: dict[str, Any], started: Any, **extra: Any) -> None:
    ProcessStep.objects.create(
        process=process, name=step.name, status=status, state=state, created_by=process.acting_user,
        started_at=started, completed_at=timezone.now(), attempt=process.current_attempt, **extra,
    )


def _record_failure(process_id: uuid.UUID | str, exc: BaseException, started: Any,
                    state: dict[str, Any] | None) -> None:
    """In a new transaction (the step's has rolled back): log the failed step and fail the process."""
    message = _describe(exc)
    trace = "".join(tb.format_exception(exc))
    logger.warning("process %s: step failed: %s", process_id, message)
    with transaction.atomic():
        process = get_process(process_id, lock=True)
        if process.status != P.RUNNING:
            return  # aborted or handled by someone else meanwhile
        spec = get_workflow(process.workflow.name)
        step = spec.steps[process.current_step] if process.current_step < len(spec.steps) else None
        name = step.name if step else f"step {process.current_step + 1}"
        if state is None:
            state = current_state(process)
        retrying = step is not None and step.kind == StepKind.RETRY
        max_tries = int(orchestrator_setting("RETRYSTEP_MAX_TRIES"))
        ProcessStep.objects.create(
            process=process, name=name,
            status=StepStatus.WAITING if retrying and process.current_attempt < max_tries else StepStatus.FAILED,
            state=state, error=message, error_type=type(exc).__qualname__, traceback=trace,
            created_by=process.acting_user, started_at=started, completed_at=timezone.now(),
            attempt=process.current_attempt,
        )
        reason = f"{name}: {message}"
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TransactionManagementError):
        return (
            f"the step tried to commit or end its transaction ({exc}). A step runs in one transaction "
            f"together with its log entry and cannot commit part of its work: remove transaction.commit() "
            f"(or set_autocommit/rollback) from the step"
        )
    if isinstance(exc, DatabaseError):
        return f"database error: {exc}".strip()
    text = str(exc).strip()
    return text if text else type(exc).__name__


# --- operations: start, retry, resume, abort ---------------------------------------------------------
def create_process(spec: WorkflowSpec, state: dict[str, Any], *, by: Any, user_input: dict[str, Any]) -> Process:
    """Create a running process with its initial input; the caller holds the transaction.

    The workflow's first step (`init`, "Start") is logged here with the initial state, so every later
    step, wherever it runs, finds the state it starts from in the log. Refused with EnginePaused (503)
    while the engine is paused.
    """
    from workflows.sync import workflow_row

    who = actor_name(by)
    process = Process(process_id=uuid.uuid4(), created_by=who, acting_user=who, is_task=spec.is_task,
                      workflow_version=spec.version, current_step=1, last_step=spec.steps[0].name)
    process.run()  # the FSM decides a new process's status, on whichever path writes it
    state.update({"process_id": str(process.process_id), "workflow": spec.name, "created_by": who})
    now = timezone.now()
    # A run in this very process (inline, thread pool) holds the process from its creation; a worker
    # elsewhere claims it when it gets the message.
    lease = steplog.new_lease() if getattr(get_executor(), "runs_here", False) else None
    created = steplog.create(
        process_id=process.process_id, workflow_name=spec.name, status=process.status,
        first_step=spec.steps[0].name, who=who, is_task=spec.is_task, version=spec.version,
        user_input=user_input, state=state, now=now, input_type=InputType.INITIAL, step_status=StepStatus.SUCCESS,
        lease=lease,
    )
    if created:
        process._state.adding = False  # the row exists: a later save() must update it, not insert it again
    else:
        # The general path: says why the one-statement path could not be taken (engine paused), or
        # takes care of what it does not (a workflow row not synced yet, another database).
        check_engine_running(f"start {spec.name}")
        process.workflow = workflow_row(spec)
        process.started_at = process.last_modified_at = now
        process.save(force_insert=True)
        InputState.objects.create(process=process, input_type=InputType.INITIAL, input=user_input,
                                  created_by=who, input_time=now)
        ProcessStep.objects.create(
            process=process, name=spec.steps[0].name, status=StepStatus.SUCCESS, state=state, created_by=who,
            started_at=now, completed_at=now,
        )
        if lease is not None:
            ProcessLease.objects.create(process=process, owner=lease.owner, expires_at=lease.renewed())
    if lease is not None:
        _remember_state(process.process_id, 1, state, lease)
    return process


# The state a process was just created with, so an inline run does not read back what it just wrote.
# Bounded: entries of processes that never ran here (another worker, a rolled-back start) fall out.
_FRESH: OrderedDict[str, tuple[int, dict[str, Any], steplog.Lease]] = OrderedDict()
_FRESH_MAX = 256


def _remember_state(process_id: uuid.UUID, position: int, state: dict[str, Any], lease: steplog.Lease) -> None:
    _FRESH[str(process_id)] = (position, state, lease)
    while len(_FRESH) > _FRESH_MAX:
        _FRESH.popitem(last=False)


def retry(process_id: uuid.UUID | str, *, by: Any = None) -> Process:
    """Make a failed or waiting process (or one whose worker died mid-step) run again from its last state."""
    check_engine_running("retry a process")
    with transaction.atomic():
        process = lock_idle(process_id, "retry")
        spec = get_workflow(process.workflow.name)
        if process.status == P.RUNNING:
            # We hold its row lock, so no worker is inside a step: its worker died (or is between two
            # steps, and then the position check in _run_one_step keeps both from running one step).
            logger.info("process %s: retried while running (its worker is gone)", process.process_id)
            # An operator's retry takes the process over: the dead worker's lease would otherwise keep
            # the new run waiting until it lapsed. A live worker between two steps loses nothing: the
            # position check under the row lock keeps the two runs from doing any step twice.
            ProcessLease.objects.filter(process=process).delete()
            process.acting_user = actor_name(by)
            process.save(update_fields=["acting_user", "last_modified_at"])
            return process
        if process.status not in RETRYABLE:
            raise WrongProcessStatus(
                f"cannot retry process {process.process_id}: it is {process.status}; only "
                f"{', '.join(RETRYABLE)} (or running with a dead worker) processes can be retried",
                process_id=process.process_id,
            )
        check_version(process, spec, "retry")
        process.resume()
        process.run()
        process.acting_user = actor_name(by)
        process.last_modified_at = timezone.now()
        process.save(update_fields=["status", "next_retry_at", "acting_user", "last_modified_at"])
        logger.info("process %s: retried by %s", process.process_id, actor_name(by))
    return process


def resume(process_id: uuid.UUID | str, user_input: Any, *, by: Any = None) -> Process:
    """Give a suspended process the input its input step waits for; invalid input changes nothing."""
    check_engine_running("resume a process")
    with transaction.atomic():
        process = get_process(process_id, lock=True)
        if process.status != P.SUSPENDED:
            raise WrongProcessStatus(
                f"cannot resume process {process.process_id}: it is {process.status}, not suspended "
                f"(waiting for input)",
                process_id=process.process_id,
            )
        spec = get_workflow(process.workflow.name)
        check_version(process, spec, "resume")
        step = spec.steps[process.current_step]
        if step.kind != StepKind.INPUT:
            raise WrongProcessStatus(f"process {process.process_id} is not waiting at an input step")
        validated = validate_input(step.form, user_input, what=f"input for step {step.name!r}")
        who = actor_name(by)
        started = timezone.now()
        state = {**current_state(process), **validated}
        InputState.objects.create(
            process=process, input_type=InputType.USER, step_name=step.name, input=validated, created_by=who,
        )
        process.resume()
        process.run()
        ProcessStep.objects.create(
            process=process, name=step.name, status=StepStatus.SUCCESS, state=state, created_by=who,
            started_at=started, completed_at=timezone.now(), attempt=process.current_attempt,
        )
        process.current_step += 1
        process.current_attempt = 1
        process.last_step = step.name
        process.acting_user = who
        process.last_modified_at = timezone.now()
        process.save(update_fields=[
            "status", "next_retry_at", "current_step", "current_attempt", "last_step", "acting_user",
            "last_modified_at",
        ])
    return process


def abort(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """End a process for good, logging who aborted it and why; its subscriptions stay as they are."""
    with transaction.atomic():
        # Waits for a step in progress to finish, so the abort lands on a step boundary.
        process = get_process(process_id, lock=True)
        if process.status not in ABORTABLE:
            raise WrongProcessStatus(
                f"cannot abort process {process.process_id}: it is already {process.status}",
                process_id=process.process_id,
            )
        who = actor_name(by)
        text = f"aborted by {who}" + (f": {reason}" if reason else "")
        now = timezone.now()
        ProcessStep.objects.create(
            process=process, name="Abort", status=StepStatus.ABORT, state=current_state(process),
            error=text, created_by=who, started_at=now, completed_at=now, attempt=1,
        )
        process.abort(text)
        process.last_step = "Abort"
        process.last_modified_at = now
        process.save(update_fields=["status", "failed_reason", "next_retry_at", "last_step", "last_modified_at"])
    logger.info("process %s: %s", process.process_id, text)
    return process


def pending_form(process: Process) -> dict[str, Any] | None:
    """The input a suspended process waits for: its step, the form's JSON Schema and initial values.

    The initial values come from the input step's function, run against the current state in a
    transaction that is always rolled back: showing a form must never change anything.
    """
    from workflows.forms import json_schema

    if process.status != P.SUSPENDED:
        return None
    spec = get_workflow(process.workflow.name)
    if process.current_step >= len(spec.steps) or spec.steps[process.current_step].kind != StepKind.INPUT:
        return None
    step = spec.steps[process.current_step]
    initial: dict[str, Any] = {}
    try:
        with transaction.atomic():
            initial = call_step(step, current_state(process), acting_user=process.acting_user)
            transaction.set_rollback(True)
    except Exception as exc:  # a form without initial values is still a form
        logger.warning("process %s: initial values for %r failed: %s", process.process_id, step.name, exc)
    fields = json_schema(step.form)["properties"]
    return {
        "step": step.name,
        "schema": json_schema(step.form, title=step.name),
        "initial": {key: value for key, value in initial.items() if key in fields},
    }


def skip_step(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """Give up on a failed (or waiting) process's current step and continue with the next one.

    What staff otherwise do by hand in the database: the step is logged as `skipped` with who skipped
    it and why, the state stays that of the last successful step (the skipped step added nothing), and
    the process runs on from the next step. A reason is mandatory: skipping is an exception to the
    workflow, and the log must say why it was made.
    """
    from orchestrator_site.errors import InvalidInput

    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("cannot skip a step without a reason: say why it is safe to skip it",
                           errors={"reason": ["This field is required."]})
    check_engine_running("skip a step")
    with transaction.atomic():
        process = lock_idle(process_id, "skip a step of")
        if process.status not in RETRYABLE:
            raise WrongProcessStatus(
                f"cannot skip a step of process {process.process_id}: it is {process.status}; only the failed "
                f"step of a {', '.join(RETRYABLE)} process can be skipped",
                process_id=process.process_id,
            )
        spec = get_workflow(process.workflow.name)
        check_version(process, spec, "skip a step of")
        step = spec.steps[process.current_step]
        if step.kind == StepKind.DONE:
            # Past the last step there is nothing to continue with: the process could never complete.
            raise WrongProcessStatus(
                f"cannot skip step {step.name!r} of process {process.process_id}: it is the workflow's last "
                f"step, which completes the process; retry or abort it instead",
                process_id=process.process_id,
            )
        who = actor_name(by)
        text = f"skipped by {who}: {reason}"
        now = timezone.now()
        ProcessStep.objects.create(
            process=process, name=step.name, status=StepStatus.SKIPPED, state=current_state(process),
            error=text, created_by=who, started_at=now, completed_at=now, attempt=process.current_attempt,
        )
        process.resume()
        process.run()
        process.current_step += 1
        process.current_attempt = 1
        process.last_step = step.name
        process.failed_reason = ""
        process.traceback = ""
        process.acting_user = who
        process.last_modified_at = now
        process.save(update_fields=[
            "status", "next_retry_at", "current_step", "current_attempt", "last_step", "failed_reason",
            "traceback", "acting_user", "last_modified_at",
        ])
    logger.info("process %s: step %r %s", process.process_id, step.name, text)
    return process
