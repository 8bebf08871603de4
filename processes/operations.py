"""Operations on one process: create it, retry, resume, skip a step, abort, and the form it waits for.

Each is one transaction under the process's row lock, and each that makes a process runnable again writes
its queued run record (leases.queue) in that transaction, so a hand-over that is lost is made again by the
recovery sweep. processes.services wraps these with the checks of who may do what, and the hand-over.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import InvalidInput, NotFound
from processes import callbacks, engine, groups, leases, statelog, steplog
from processes.errors import AlreadyRunning, ProcessBusy, WrongProcessStatus
from processes.executors import get_executor
from processes.models import (
    ABORTABLE,
    RETRYABLE,
    InputState,
    InputType,
    Process,
    ProcessLease,
    ProcessStatus,
    ProcessStep,
    StepStatus,
)
from processes.state import deep_merge
from processes.steps import call_step
from subscriptions.lifecycle import actor_name
from workflows.dsl import StepKind
from workflows.forms import validate_input
from workflows.registry import WorkflowSpec, get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus


def create_process(spec: WorkflowSpec, state: dict[str, Any], *, by: Any, user_input: dict[str, Any],
                   child: steplog.ChildOf | None = None) -> Process:
    """Create a running process with its initial input; the caller holds the transaction.

    The workflow's first step (`init`, "Start") is logged here with the initial state, so every later
    step, wherever it runs, finds the state it starts from in the log. Its run record is written with it:
    claimed for this thread when the executor runs processes here (inline), queued otherwise. Refused
    with EnginePaused (503) while the engine is paused.
    """
    from workflows.sync import workflow_row

    who = actor_name(by)
    process = Process(process_id=uuid.uuid4(), created_by=who, acting_user=who, is_task=spec.is_task,
                      workflow_version=spec.version, current_step=1, last_step=spec.steps[0].name)
    if child is not None:  # linked as it is created: a child exists with its link or not at all
        process.parent_id, process.parent_step = child.parent_id, child.step
        process.child_index, process.child_round = child.index, child.round
    process.run()  # the FSM decides a new process's status, on whichever path writes it
    state.update({"process_id": str(process.process_id), "workflow": spec.name, "created_by": who})
    now = timezone.now()
    runs_here = bool(getattr(get_executor(), "runs_here", False))
    owner = leases.local_owner() if runs_here else ""
    expires_at = now + (timedelta(seconds=float(orchestrator_setting("LEASE_SECONDS"))) if runs_here
                        else leases.resend_delay(0))
    state_json = statelog.to_json(state)
    created = steplog.create(
        process_id=process.process_id, workflow_name=spec.name, status=process.status,
        first_step=spec.steps[0].name, who=who, is_task=spec.is_task, version=spec.version,
        user_input=user_input, state_json=state_json, now=now, input_type=InputType.INITIAL,
        step_status=StepStatus.SUCCESS, owner=owner, expires_at=expires_at, child=child,
    )
    if created:
        process._state.adding = False  # the row exists: a later save() must update it, not insert it again
    else:
        # The general path: says why the one-statement path could not be taken (engine paused), or
        # takes care of what it does not (a workflow row not synced yet, another database).
        engine.check_engine_running(f"start {spec.name}")
        process.workflow = workflow_row(spec)
        process.started_at = process.last_modified_at = now
        process.save(force_insert=True)
        InputState.objects.create(process=process, input_type=InputType.INITIAL, input=user_input,
                                  created_by=who, input_time=now)
        ProcessStep.objects.create(
            process=process, name=spec.steps[0].name, status=StepStatus.SUCCESS, state=state, created_by=who,
            started_at=now, completed_at=now,
        )
        ProcessLease.objects.create(process=process, owner=owner, expires_at=expires_at, queued_at=now, position=1)
    if runs_here:
        engine.remember_state(process.process_id, 1, state, statelog.Since(0, 0, len(state_json)))
    return process


def retry(process_id: uuid.UUID | str, *, by: Any = None) -> Process:
    """Make a failed or waiting process (or a running one whose run stopped) run again from its last state.

    Of several retries at once, one wins: the others find the process running (or waiting for a worker)
    and are refused with AlreadyRunning (409).
    """
    engine.check_engine_running("retry a process")
    with transaction.atomic():
        process = engine.lock_idle(process_id, "retry")
        if process.status == P.RUNNING:
            _take_over_stopped_run(process, by)
            return process
        if process.status == P.AWAITING_CHILDREN:
            raise WrongProcessStatus(
                f"cannot retry process {process.process_id}: it awaits its child processes at step "
                f"{process.last_step!r} and goes on by itself when the last one ends; retry (or skip the step "
                f"of) a failed child instead, or abort this process to abort them all",
                process_id=process.process_id,
            )
        if process.status not in RETRYABLE:
            raise WrongProcessStatus(
                f"cannot retry process {process.process_id}: it is {process.status}; only "
                f"{', '.join(RETRYABLE)} (or running with a dead worker) processes can be retried",
                process_id=process.process_id,
            )
        spec = engine.spec_of(process, "retry")
        engine.check_version(process, spec, "retry")
        # A callback step runs its action again, with a new token: the old one (and an answer taken but
        # refused by validate) no longer counts. A timer wait is woken now.
        callbacks.close_open(process.process_id, f"the process was retried by {actor_name(by)}")
        if process.failed_reason or process.status != P.WAITING:
            # A step group that failed starts again at its first sub-step (a timer's wait is not a failure:
            # the group goes on after it).
            groups.forget(process)
        process.resume()  # clears the old failure from the row; the failed step rows keep it
        process.run()
        process.acting_user = actor_name(by)
        process.last_modified_at = timezone.now()
        process.save(update_fields=["status", "next_retry_at", "failed_reason", "traceback", "acting_user",
                                    "last_modified_at"])
        leases.queue(process.process_id, fresh=True)
        logger.info("process %s: retried by %s", process.process_id, actor_name(by))
    return process


def _take_over_stopped_run(process: Process, by: Any) -> None:
    """Retry of a running process: allowed only when no run holds it (we hold its row lock, so no step is
    in progress) and it is not waiting for a worker; refused otherwise (it was already retried)."""
    record = ProcessLease.objects.select_for_update().filter(process=process).first()
    now = timezone.now()
    since = f"{process.last_modified_at:%Y-%m-%d %H:%M:%S %Z}"
    if record is not None and record.expires_at >= now:
        if record.queued:
            raise AlreadyRunning(
                f"cannot retry process {process.process_id}: it was already retried (by {process.acting_user}, "
                f"{since}) and is waiting for a worker; if none takes it, it is handed over again at "
                f"{record.expires_at:%H:%M:%S %Z}",
                process_id=process.process_id,
            )
        raise AlreadyRunning(
            f"cannot retry process {process.process_id}: it is already running (for {process.acting_user}, "
            f"last step at {since}); if its worker died, the process is recovered by itself when its lease "
            f"lapses at {record.expires_at:%H:%M:%S %Z}",
            process_id=process.process_id,
        )
    engine.spec_of(process, "retry")
    # Its run stopped without finishing (its worker died, or the engine was paused): it runs again from
    # where it stopped. A run thought dead but alive would find its lease gone and stop at its next step.
    logger.info("process %s: retried while running (its run stopped)", process.process_id)
    process.acting_user = actor_name(by)
    process.last_modified_at = now
    process.save(update_fields=["acting_user", "last_modified_at"])
    leases.queue(process.process_id, fresh=True)


def wake(process_id: uuid.UUID | str) -> bool:
    """The sweep's part for a timer that ended: the process goes on with the step after it, for whoever it
    ran for. False when it no longer waits for a timer (woken, retried or aborted meanwhile); needs the
    caller's transaction."""
    process = engine.get_process(process_id, lock=True)
    if process.status != P.WAITING or process.failed_reason:
        return False
    process.resume()
    process.run()
    process.last_modified_at = timezone.now()
    process.save(update_fields=["status", "next_retry_at", "failed_reason", "traceback", "last_modified_at"])
    leases.queue(process.process_id, fresh=True)
    return True


def resume(process_id: uuid.UUID | str, user_input: Any, *, by: Any = None) -> Process:
    """Give a suspended process the input its input step waits for; invalid input changes nothing.

    The input is deep-merged into the state: nested mappings are merged key by key, lists and other
    values replace what was there.
    """
    engine.check_engine_running("resume a process")
    with transaction.atomic():
        process = engine.lock_idle(process_id, "resume")
        if process.status != P.SUSPENDED:
            raise WrongProcessStatus(
                f"cannot resume process {process.process_id}: it is {process.status}, not suspended "
                f"(waiting for input)",
                process_id=process.process_id,
            )
        spec = engine.spec_of(process, "resume")
        engine.check_version(process, spec, "resume")
        place = groups.place_of(process, spec)
        groups.check_unchanged(process, spec, place, "resume")
        if place is None or place.step.kind != StepKind.INPUT:
            raise WrongProcessStatus(f"process {process.process_id} is not waiting at an input step")
        step = place.step
        validated = validate_input(step.form, user_input, what=f"input for step {place.name!r}")
        who = actor_name(by)
        started = timezone.now()
        before = place.state if place.state is not None else engine.current_state(process)
        state = deep_merge(before, validated)
        InputState.objects.create(
            process=process, input_type=InputType.USER, step_name=place.name, input=validated, created_by=who,
        )
        process.resume()
        process.run()
        if place.group is not None:
            _resume_in_group(process, place, state, who)
            return process
        ProcessStep.objects.create(
            process=process, name=step.name, status=StepStatus.SUCCESS, state=state,
            delta=statelog.diff(before, state), created_by=who,
            started_at=started, completed_at=timezone.now(), attempt=process.current_attempt,
        )
        process.current_step += 1
        process.current_attempt = 1
        process.last_step = step.name
        process.acting_user = who
        process.last_modified_at = timezone.now()
        process.save(update_fields=[
            "status", "next_retry_at", "failed_reason", "traceback", "current_step", "current_attempt",
            "last_step", "acting_user", "last_modified_at",
        ])
        leases.queue(process.process_id, fresh=True)
    return process


def _resume_in_group(process: Process, place: groups.Place, state: dict[str, Any], who: str) -> None:
    """Resume at an input step inside a step group: the input goes to the group's state and the group goes on
    with its next sub-step; no log row (the group's row, at its end, shows the input; InputState keeps who
    gave it). In resume's transaction, with the process already made running."""
    groups.save_progress(process.process_id, place.group, process.current_step, place.index + 1, state,
                        timezone.now())
    process.last_step = place.name
    process.acting_user = who
    process.last_modified_at = timezone.now()
    process.save(update_fields=["status", "next_retry_at", "failed_reason", "traceback", "last_step", "acting_user",
                                "last_modified_at"])
    leases.queue(process.process_id, fresh=True)


def abort(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """End a process for good, logging who aborted it and why; its subscriptions stay as they are.

    When a step of it is running right now, the answer comes at once: the abort is recorded as a request
    on its run record, and the run aborts the process at the step's end (its next step boundary); the
    returned process then has `abort_pending` set and `abort_message` saying so.
    """
    who = actor_name(by)
    with transaction.atomic():
        try:
            process = engine.lock_idle(process_id, "abort")
        except ProcessBusy:
            return _request_abort(process_id, who, reason)
        if process.status not in ABORTABLE:
            raise WrongProcessStatus(
                f"cannot abort process {process.process_id}: it is already {process.status}",
                process_id=process.process_id,
            )
        engine.abort_locked(process, who, reason)
    return process


def _request_abort(process_id: uuid.UUID | str, who: str, reason: str) -> Process:
    """A step holds the process row: leave the abort on its run record (a row of its own, not locked)."""
    process = engine.get_process(process_id)
    if process.status not in ABORTABLE:
        raise WrongProcessStatus(f"cannot abort process {process.process_id}: it is already {process.status}",
                                 process_id=process.process_id)
    now = timezone.now()
    request = {"abort_requested_at": now, "abort_requested_by": who, "abort_reason": reason}
    if not ProcessLease.objects.filter(process_id=process.process_id).update(**request):
        try:
            with transaction.atomic():
                # No run record (an operator's action holds the row): the sweep aborts it once free.
                ProcessLease.objects.create(process_id=process.process_id, owner="", expires_at=now, **request)
        except IntegrityError:
            ProcessLease.objects.filter(process_id=process.process_id).update(**request)
    process.abort_pending = True  # type: ignore[attr-defined]
    step = engine.step_label(process.workflow_version, process.current_step)
    process.abort_message = (  # type: ignore[attr-defined]
        f"process {process.process_id} is in the middle of step {step!r}; "
        f"it stops at its next step boundary (when that step ends) and is then aborted by {who}"
    )
    logger.info("process %s: abort requested by %s while a step runs", process.process_id, who)
    return process


def skip_step(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """Give up on a failed (or waiting) process's current step and continue with the next one.

    What staff otherwise do by hand in the database: the step is logged as `skipped` with who skipped
    it and why, the state stays that of the last successful step (the skipped step added nothing), and
    the process runs on from the next step. A reason is mandatory: skipping is an exception to the
    workflow, and the log must say why it was made.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("cannot skip a step without a reason: say why it is safe to skip it",
                           errors={"reason": ["This field is required."]})
    engine.check_engine_running("skip a step")
    with transaction.atomic():
        process = engine.lock_idle(process_id, "skip a step of")
        if process.status not in RETRYABLE:
            raise WrongProcessStatus(
                f"cannot skip a step of process {process.process_id}: it is {process.status}; only the failed "
                f"step of a {', '.join(RETRYABLE)} process can be skipped",
                process_id=process.process_id,
            )
        spec = engine.spec_of(process, "skip a step of")
        engine.check_version(process, spec, "skip a step of")
        if process.status == P.WAITING and not process.failed_reason:
            # A timer: its step is done, the process waits to go on with the next one; skipping would skip that.
            raise WrongProcessStatus(
                f"cannot skip a step of process {process.process_id}: it waits for a timer (until "
                f"{process.next_retry_at:%Y-%m-%d %H:%M:%S %Z}), no step failed; retry it to go on now",
                process_id=process.process_id,
            )
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
        callbacks.close_open(process.process_id, text)
        groups.forget(process)  # a step group is skipped whole
        now = timezone.now()
        ProcessStep.objects.create(
            process=process, name=step.name, status=StepStatus.SKIPPED, state=engine.current_state(process),
            delta=statelog.no_change(),
            error=text, created_by=who, started_at=now, completed_at=now, attempt=process.current_attempt,
        )
        process.resume()
        process.run()
        process.current_step += 1
        process.current_attempt = 1
        process.last_step = step.name
        process.acting_user = who
        process.last_modified_at = now
        process.save(update_fields=[
            "status", "next_retry_at", "current_step", "current_attempt", "last_step", "failed_reason",
            "traceback", "acting_user", "last_modified_at",
        ])
        leases.queue(process.process_id, fresh=True)
    logger.info("process %s: step %r %s", process.process_id, step.name, text)
    return process


def pending_form(process: Process) -> dict[str, Any] | None:
    """The input a suspended process waits for: its step, the form's JSON Schema and initial values.

    The initial values come from the input step's function, run against the current state in a
    transaction that is always rolled back: showing a form must never change anything. None when the
    process waits for nothing, or its workflow left the code (nothing can resume it then).
    """
    from workflows.forms import json_schema

    place = awaited_input(process)
    if place is None:
        return None
    step = place.step
    initial: dict[str, Any] = {}
    try:
        with transaction.atomic():
            state = place.state if place.state is not None else engine.current_state(process)
            initial, _, _ = call_step(step, state, acting_user=process.acting_user)
            transaction.set_rollback(True)
    except Exception as exc:  # a form without initial values is still a form
        logger.warning("process %s: initial values for %r failed: %s", process.process_id, place.name, exc)
    fields = json_schema(step.form)["properties"]
    return {
        "step": place.name,
        "schema": json_schema(step.form, title=place.name),
        "initial": {key: value for key, value in initial.items() if key in fields},
    }


def awaited_input(process: Process) -> groups.Place | None:
    """The input step a suspended process waits at (inside a step group: the sub-step), or None when it waits
    for nothing or its workflow left the code."""
    if process.status != P.SUSPENDED:
        return None
    try:
        spec = get_workflow(process.workflow.name)
    except NotFound:
        return None
    place = groups.place_of(process, spec)
    # A group whose sub-steps changed shows no form: resume refuses it, saying why.
    return place if place is not None and place.step.kind == StepKind.INPUT and not place.changed else None

