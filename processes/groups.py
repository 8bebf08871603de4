"""Step groups (workflows.dsl.step_group): several steps shown and logged as one, each still its own transaction.

A group takes one position in the workflow. The engine runs one sub-step per turn of its run loop, each in its
own transaction under the process's row lock, with every check of a step boundary (lease, abort, pause,
version) before it. Where the process is inside the group lives in its ProcessGroupProgress row:

- A sub-step that is not the last writes no log row: it saves the next sub-step's index and the state it
  left in the progress row, and touches the process row, in its own transaction. A run that dies between two
  sub-steps goes on at the next one with that state; none runs twice.
- The last sub-step writes the group's one log row (the group's name, the state after it, its delta against
  the state the log had before the group), deletes the progress row and moves the process on, in its
  transaction.
- A failed sub-step fails the group (processes.records names it by the group and the sub-step, with the state
  from before the group) and the progress row goes; a retry starts the group again at its first sub-step.
- An input step, a callback step or a timer inside a group waits as it would outside, with a row of its own
  (named by the group and the sub-step: suspend, awaiting_callback, waiting) that changes nothing in the
  log's state: what the group's sub-steps did so far stays in the progress row, where resume, the
  callback's answer and the run after the timer find it. The group's row, at its end, shows all of it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from orchestrator_site import logcontext
from processes import callbacks, leases, statelog, steplog, waits
from processes.errors import IncompatibleWorkflowChange, StepError
from processes.lookups import get_process
from processes.models import Process, ProcessGroupProgress, ProcessLease, ProcessStep, StepStatus
from processes.steps import call_step, call_timer
from workflows.dsl import Step, StepKind, sub_step_label
from workflows.registry import WorkflowSpec

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class GoingOn:
    """What a turn of the group hands back to the engine's run loop: the log's state, what was logged since
    its last snapshot, and the position to go on at (the group's own while it is not done)."""

    state: dict[str, Any]
    since: statelog.Since
    position: int


# None: the process waits now (input, callback, timer), held by no run.
Continue = GoingOn | None


def progress_of(process_id: uuid.UUID | str, position: int) -> ProcessGroupProgress | None:
    """The process's progress row for the group at `position`, if it is inside that group."""
    progress = ProcessGroupProgress.objects.filter(process_id=process_id).first()
    if progress is not None and progress.position != position:
        # Every way out of a group deletes its row; one that was not (a bug) must not steer another group.
        # Ignored here; the group's next write replaces it.
        logger.warning("process %s: ignoring the progress of a step group at step %d; it is at step %d",
                       process_id, progress.position + 1, position + 1)
        return None
    return progress


def forget(process: Process | uuid.UUID | str) -> None:
    """Drop the process's place inside a group (failed, skipped, aborted, retried): it starts the group again."""
    process_id = process.pk if isinstance(process, Process) else process
    ProcessGroupProgress.objects.filter(process_id=process_id).delete()


@dataclass(frozen=True)
class Place:
    """Where a process stands: the step at its position or, inside a group, the sub-step it is at."""

    step: Step  # the sub-step inside a group (the group itself once all its sub-steps ran), else the step
    name: str  # as shown: inside a group, workflows.dsl.sub_step_label
    group: Step | None = None
    index: int = 0
    state: dict[str, Any] | None = None  # inside a group: its state so far (None: the log's, before the group)
    changed: str = ""  # inside a group: how its sub-steps changed up to here since the process got here


def place_of(process: Process, spec: WorkflowSpec) -> Place | None:
    """Where `process` stands in `spec` (None: past its last step)."""
    if process.current_step >= len(spec.steps):
        return None
    step = spec.steps[process.current_step]
    if step.kind != StepKind.GROUP:
        return Place(step, step.name)
    progress = progress_of(process.pk, process.current_step)
    index = progress.sub_step if progress is not None else 0
    state = dict(progress.state) if progress is not None else None
    changed = changed_sub_steps(progress, step)
    if index >= len(step.substeps):
        return Place(step, step.name, step, index, state, changed)
    sub = step.substeps[index]
    return Place(sub, sub_step_label(step, sub), step, index, state, changed)


def check_unchanged(process: Process, spec: WorkflowSpec, place: Place | None, action: str) -> None:
    """Refuse an operator's action on a process waiting inside a group whose sub-steps changed up to there."""
    if place is not None and place.group is not None and place.changed:
        raise IncompatibleWorkflowChange(
            f"cannot {action} process {process.process_id}: workflow {spec.name} changed since the process got "
            f"to {place.name!r}: in the step group {place.group.name!r}, {place.changed}; it would go on at the "
            f"wrong sub-step. Abort it and start a new one",
            process_id=process.process_id,
        )


def changed_sub_steps(progress: ProcessGroupProgress | None, group: Step) -> str:
    """How the group's sub-steps, up to and including the one to run next, differ from when the process got
    there ("" if they do not). As processes.lookups.check_version does for a workflow's steps: a deploy that
    renamed, added or removed one of them would otherwise resume the group at the wrong sub-step."""
    if progress is None or not progress.sub_steps:
        return ""  # not inside the group, or a row written before the names were kept
    upto = progress.sub_step + 1
    old, new = list(progress.sub_steps)[:upto], [sub.name for sub in group.substeps][:upto]
    changes = []
    for index in range(max(len(old), len(new))):
        before = old[index] if index < len(old) else None
        after = new[index] if index < len(new) else None
        if before != after:
            changes.append(f"sub-step {index + 1} was {before!r}, is now {after!r}" if before and after
                           else f"sub-step {index + 1} ({before!r}) was removed" if before
                           else f"sub-step {index + 1} ({after!r}) was added")
    return "; ".join(changes)


def failed_in(process: Process, group: Step) -> tuple[Step, str]:
    """The sub-step of `group` that just failed (the one its progress row points at) and its name, for the
    failure record; the progress row goes in the record's transaction (a retry starts the group again)."""
    progress = progress_of(process.pk, process.current_step)
    index = progress.sub_step if progress is not None else 0
    forget(process)
    if index >= len(group.substeps):
        return group, group.name
    sub = group.substeps[index]
    return sub, sub_step_label(group, sub)


def save_progress(process_id: uuid.UUID | str, group: Step, position: int, sub_step: int, state: dict[str, Any],
                  started: datetime) -> None:
    """Insert or update the progress row in one statement (the process row's lock orders the writers);
    `started` is kept from the group's first write."""
    ProcessGroupProgress.objects.bulk_create(
        [ProcessGroupProgress(process_id=process_id, position=position, sub_step=sub_step, state=state,
                              started_at=started, sub_steps=[sub.name for sub in group.substeps])],
        update_conflicts=True, unique_fields=["process"],
        update_fields=["position", "sub_step", "state", "sub_steps"],
    )


# --- the engine's turn at a group ------------------------------------------------------------------------
def run(locked: steplog.Locked, group: Step, state: dict[str, Any], since: statelog.Since, started: datetime,
        lease: leases.Lease) -> Continue:
    """Run the group's next sub-step in the current transaction (the engine's, under the process's row lock).

    `state` and `since` are the log's: the state before the group, which the log keeps until the group's row.
    """
    progress = progress_of(locked.process_id, locked.current_step)
    index = progress.sub_step if progress is not None else 0
    inner = dict(progress.state) if progress is not None else state
    begun = progress.started_at if progress is not None else started
    changed = changed_sub_steps(progress, group)
    if changed:
        # Failed like a step that changed under its process (processes.engine); the failure forgets the
        # progress, so a retry starts the group again at its first sub-step, as the new code has it.
        raise StepError(f"workflow {locked.workflow_name} changed under the running process: in the step group "
                        f"{group.name!r}, {changed}; a retry starts the group again at its first sub-step")
    if index >= len(group.substeps):  # the last sub-step was a timer: the group ends now
        return _finish(locked, group, state, inner, since, begun, lease)
    sub = group.substeps[index]
    label = sub_step_label(group, sub)
    turn = _Turn(locked, group, index, label, state, since, started, begun, lease)
    context = logcontext.bind_step(locked.workflow_name, label)
    try:
        if sub.kind == StepKind.INPUT and (sub.condition is None or sub.condition(inner)):
            return turn.suspend(inner)
        if sub.kind == StepKind.CALLBACK:
            return turn.callback(sub, inner)
        if sub.condition is not None and not sub.condition(inner):
            return turn.done(inner)  # skipped: it changes nothing
        if sub.kind == StepKind.TIMER:
            until = waits.moment(sub, call_timer(sub, inner, acting_user=locked.acting_user))
            if until is not None and until > timezone.now():
                return turn.sleep(inner, until)
            return turn.done(inner)
        new_inner, _, again = call_step(sub, inner, acting_user=locked.acting_user)
        if again:
            raise StepError(f"step {sub.name!r} in the step group {group.name!r} returned again(...): a sub-step "
                            f"runs once per run of its group; take it out of the group to have it run again")
        return turn.done(new_inner)
    finally:
        logcontext.reset_step(context)


@dataclass
class _Turn:
    locked: steplog.Locked
    group: Step
    index: int
    label: str
    log_state: dict[str, Any]
    since: statelog.Since
    started: datetime
    begun: datetime  # when the group's first sub-step started
    lease: leases.Lease

    def done(self, inner: dict[str, Any]) -> Continue:
        """The sub-step's work is done: save where the group is, or end it with its row; either commits with
        that work, in this transaction."""
        if self.index + 1 >= len(self.group.substeps):
            return _finish(self.locked, self.group, self.log_state, inner, self.since, self.begun, self.lease)
        locked = self.locked
        save_progress(locked.process_id, self.group, locked.current_step, self.index + 1, inner, self.started)
        # The process row shows the run going on (and its ETag changes); the lease is renewed as a step's is.
        Process.objects.filter(pk=locked.process_id).update(last_step=self.label, last_modified_at=timezone.now())
        if self.lease.due():
            ProcessLease.objects.filter(process_id=locked.process_id, owner=self.lease.owner).update(
                expires_at=self.lease.renewed())
            self.lease.mark_renewed()
        # Progress: a run that dies in a later sub-step is not "stuck at one step" (RECOVERY_MAX_TIMES).
        leases.forget_recoveries(locked.process_id, self.lease)
        return GoingOn(self.log_state, self.since, locked.current_step)

    def suspend(self, inner: dict[str, Any]) -> Continue:
        """An input step: the process waits for a user's input (processes.operations.resume)."""
        process = self._wait_at(self.index, inner, StepStatus.SUSPEND)
        process.suspend()
        process.save(update_fields=["status", "last_step", "last_modified_at"])
        let_go_waiting(process)  # or aborted now, as asked while the sub-step ran
        return None

    def callback(self, sub: Step, inner: dict[str, Any]) -> Continue:
        """A callback step: check the answer if one was taken for it, else run its action and await one."""
        assert sub.callback is not None
        locked = self.locked
        answer = callbacks.received(locked.process_id, locked.current_step, self.index)
        if answer is None and sub.condition is not None and not sub.condition(inner):
            return self.done(inner)
        if answer is not None:
            # The answer is in the group's state (processes.callbacks put it there); validate checks it.
            new_inner = inner
            if sub.callback.validate is not None:
                new_inner, _, again = call_step(sub.callback.validate, inner, acting_user=locked.acting_user)
                if again:
                    raise StepError(f"the validate step of {self.label!r} returned again(...): it cannot run again")
            callbacks.close(answer, "answer validated")
            return self.done(new_inner)
        issued = callbacks.issue(locked.process_id, sub, locked.current_step, locked.current_attempt,
                                 sub_step=self.index, name=self.label)
        extra = {"callback_url": issued.url, "callback_token": issued.token,
                 "callback_progress_url": issued.progress_url}
        new_inner, _, again = call_step(sub, inner, acting_user=locked.acting_user, extra=extra)
        if again:
            raise StepError(f"callback step {self.label!r} returned again(...): a callback step's action runs once")
        process = self._wait_at(self.index, new_inner, StepStatus.AWAITING_CALLBACK)
        process.await_callback(issued.deadline)
        process.save(update_fields=["status", "next_retry_at", "last_step", "last_modified_at"])
        if let_go_waiting(process):
            return None
        logger.info("process %s: awaiting the callback of %r until %s", process.process_id, self.label,
                    issued.deadline)
        return None

    def sleep(self, inner: dict[str, Any], until: datetime) -> Continue:
        """A timer: the process waits; the sweep wakes it, and the group goes on with the next sub-step."""
        process = self._wait_at(self.index + 1, inner, StepStatus.WAITING)
        process.sleep(until)
        process.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "last_step",
                                    "last_modified_at"])
        if let_go_waiting(process):
            return None
        logger.info("process %s: timer %r waits until %s", process.process_id, self.label, until)
        return None

    def _wait_at(self, next_index: int, inner: dict[str, Any], row_status: str) -> Process:
        """Save the group's place and state and log the wait (a snapshot of the log's state: it changes
        nothing); the caller makes the transition, saves the process and lets its run record go
        (records.let_go_waiting: from the commit on, what it waits for hands it to the executor again)."""
        locked = self.locked
        save_progress(locked.process_id, self.group, locked.current_step, next_index, inner, self.started)
        process = get_process(locked.process_id)  # its row is already locked by this transaction
        now = timezone.now()
        ProcessStep.objects.create(
            process=process, name=self.label, status=row_status, state=self.log_state, delta=statelog.no_change(),
            created_by=locked.acting_user, started_at=self.started, completed_at=now,
            attempt=process.current_attempt,
        )
        process.last_step = self.label
        process.last_modified_at = now
        return process


def let_go_waiting(process: Process) -> bool:
    from processes.records import let_go_waiting as let_go  # records imports this module

    return let_go(process)


def _finish(locked: steplog.Locked, group: Step, log_state: dict[str, Any], inner: dict[str, Any],
            since: statelog.Since, begun: datetime, lease: leases.Lease) -> Continue:
    """The group's last sub-step is done: its one log row (the state after it, the delta against the log's
    state before the group), the progress row gone and the process moved on, in this transaction."""
    entry = statelog.entry(inner, statelog.diff(log_state, inner), since)
    steplog.advance(locked, step_name=group.name, step_status=StepStatus.SUCCESS, entry=entry, started=begun,
                    finished=timezone.now(), lease=lease)
    forget(locked.process_id)
    return GoingOn(inner, entry.since, locked.current_step + 1)
