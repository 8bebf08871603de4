"""The engine: runs a process's steps, one database transaction per step, and keeps the state log.

The contract (the README's "The engine's guarantees"):
- One step = one transaction: lock the process row, check the run still holds the process, the engine is
  not paused and the process is still running at the expected position, run the step function, insert its
  log row with the new state, update the process row. The step's writes, its log row and the process
  update commit together.
- A failing step leaves no trace of its work: its transaction rolls back, then a second transaction
  records the `failed` row (error, exception class, traceback, attempt) and fails the process (or puts it
  in `waiting` for a retrystep). If even that record cannot be written, a minimal one is (sanitised text,
  the state copied by the database from the last row), so the process never stays `running` unexplained.
- A lost database connection is not the step's failure: its transaction rolled back on the server, so the
  run reconnects and runs the step again, with backoff, DB_RECONNECT_TRIES times at most; then the process
  is failed with the reason. A run that can record nothing at all keeps its lease until it lapses, and the
  recovery sweep counts how often that happens at one step (leases.count_recovery).
- A retry runs the failed step again from the state of the last successful step.
- A step that returns `again({...})` runs again: each run is one such transaction with its own log row,
  the process staying at that step, until a run returns a plain result. A crash, failure or pause between
  runs resumes from the state of the last committed run (the step keeps its cursor there).
- A callback step or a timer that goes to wait (processes.waits) ends the run in its step's transaction: the
  process is `awaiting_callback` or `waiting` with the moment the sweep acts, and no run holds it.
- A children step (sub-processes, parallel branches: processes.joins) creates its children in its step's
  transaction and leaves the process `awaiting_children`, held by no run; a child's final transaction wakes
  it when no other child is left unfinished.
- A step group (processes.groups) runs one sub-step per such transaction, with the same checks between
  them; one log row for the whole group, written with its last sub-step.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from orchestrator_site import logcontext
from orchestrator_site.conf import orchestrator_setting
from processes import groups, joins, leases, statelog, steplog, waits
from processes.dberrors import connection_lost, drop_connection
from processes.errors import StepError

# The engine's lookups, used by its operations, the services, the API and the admin through `engine.`.
from processes.lookups import (  # noqa: F401
    check_engine_running,
    check_version,
    current_state,
    engine_paused,
    get_process,
    lock_idle,
    spec_of,
    step_label,
)
from processes.models import Process, ProcessStatus, ProcessStep, StepStatus
from processes.records import (  # noqa: F401  (abort_locked, describe and fail_running are used through engine.)
    ConnectionLost,
    Unrecorded,
    abort_locked,
    describe,
    fail_running,
    give_up_on_database,
    let_go_waiting,
    record_failure,
)
from processes.steps import call_step
from workflows.dsl import Step, StepKind
from workflows.registry import get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus


# --- running steps -----------------------------------------------------------------------------------
@dataclass
class _Outcome:
    keep_going: bool
    state: dict[str, Any] | None = None
    position: int = 0
    since: statelog.Since | None = None
    released: bool = False  # nothing of this run's to let go (the last step did, or another run holds it)


def run_process(process_id: uuid.UUID | str, *, owner: str | None = None) -> None:
    """Run a process's steps until it completes, fails, waits, suspends or is stopped.

    The run holds the process's lease: claimed here (or at creation, for a run in the creating thread,
    which passes `owner=leases.local_owner()`), renewed with its steps, let go when the run stops. A
    process that another live run holds is not run twice: this call returns at once (a duplicated or
    redelivered message). A run whose lease another run took over stops at its next step boundary.

    Every line logged during the run carries the process id, and while a step runs, its workflow and step
    (orchestrator_site.logcontext), in whichever executor or thread the run happens.
    """
    context = logcontext.bind_process(process_id)
    try:
        _run_process(process_id, owner)
    finally:
        logcontext.reset_process(context)


def _run_process(process_id: uuid.UUID | str, owner: str | None) -> None:
    lease = leases.new_lease(owner)
    # A state remembered at creation is only a hint: the first step uses it only if the process is
    # still at that position under its lock, and reads the log otherwise.
    hint = _FRESH.pop(str(process_id), None) if owner is not None else None
    position, state, since = hint if hint is not None else (-1, None, None)
    if hint is None:
        claimed = _claim(process_id, lease)
        if not claimed:
            return
    clean, released, lost = False, False, 0
    try:
        while True:
            try:
                outcome = _run_one_step(process_id, state, since, position, lease)
            except ConnectionLost as exc:
                lost += 1
                tries = int(orchestrator_setting("DB_RECONNECT_TRIES"))
                logger.warning("process %s: lost the database connection (%d of %d): %s",
                               process_id, lost, tries, exc)
                if lost >= tries:
                    clean = give_up_on_database(process_id, exc, lost)
                    return
                time.sleep(_reconnect_delay(lost))
                state, since, position = None, None, -1  # read it again on the new connection
                continue
            lost = 0
            if not outcome.keep_going:
                clean, released = True, outcome.released
                return
            state, since, position = outcome.state, outcome.since, outcome.position
    except Unrecorded as exc:
        logger.critical("process %s: %s; its lease is left to lapse, and the recovery sweep takes it from there",
                        process_id, exc)
    finally:
        if clean and not released:
            try:
                leases.release(process_id, lease)
            except DatabaseError as exc:  # the lease lapses by itself; the sweep sees a stopped process
                logger.warning("process %s: could not let its lease go: %s", process_id, exc)


def _reconnect_delay(lost: int) -> float:
    return min(float(orchestrator_setting("DB_RECONNECT_BACKOFF_SECONDS")) * 2 ** (lost - 1),
               float(orchestrator_setting("DB_RECONNECT_BACKOFF_MAX_SECONDS")))


def _claim(process_id: uuid.UUID | str, lease: leases.Lease) -> bool:
    """Claim the process (leases.claim), reconnecting like a step does; fail it when it cannot be recovered."""
    tries = int(orchestrator_setting("DB_RECONNECT_TRIES"))
    for attempt in range(1, tries + 1):
        try:
            got = leases.claim(process_id, lease)
            break
        except DatabaseError as exc:
            if not connection_lost(exc):
                raise
            drop_connection()
            logger.warning("process %s: lost the database connection while claiming it (%d of %d): %s",
                           process_id, attempt, tries, exc)
            if attempt == tries:
                # Nothing was taken: the run record still says queued, or the dead run's; the sweep hands
                # the process over again once the database is back.
                return False
            time.sleep(_reconnect_delay(attempt))
    if got.give_up:
        fail_running(process_id, got.give_up)
        leases.release(process_id, lease)
        return False
    if not got.ok:
        logger.info("process %s: another run holds it or it is not running; not running it twice", process_id)
    return got.ok


def _run_one_step(process_id: uuid.UUID | str, state: dict[str, Any] | None, since: statelog.Since | None,
                  position: int, lease: leases.Lease) -> _Outcome:
    started = timezone.now()
    label = f"step {position + 1}" if position >= 0 else "its next step"
    step_context = None
    try:
        with transaction.atomic():
            # Lock first, then run the step: a second runner of the same process waits here and
            # then sees the position moved on, so no step runs twice.
            locked = steplog.lock(process_id)
            if locked is None:
                return _Outcome(False)
            label = step_label(locked.workflow_version, locked.current_step)
            if locked.lease_owner != lease.owner:
                # Another run took the process over (this one was thought dead): it is theirs now.
                logger.warning("process %s: its lease went to %s; this run (%s) stops", process_id,
                               locked.lease_owner, lease.owner)
                return _Outcome(False, released=True)
            if locked.status != P.RUNNING:
                return _Outcome(False)
            if locked.abort_requested_by is not None:
                # Asked for while the previous step ran: this is the boundary it waited for.
                abort_locked(get_process(process_id), locked.abort_requested_by, locked.abort_reason)
                return _Outcome(False, released=True)
            if locked.engine_paused:
                return _Outcome(False)
            spec = get_workflow(locked.workflow_name)  # NotFound: removed from code; failed below
            at = locked.current_step
            if at >= len(spec.steps):
                raise StepError(f"process is past the last step of {spec.name} (step {at + 1})")
            step = spec.steps[at]
            # Reset in `finally` below: the lines of the step, and of its failure being recorded, carry it;
            # those after it do not (the next step sets its own).
            step_context = logcontext.bind_step(locked.workflow_name, step.name)
            expected = locked.workflow_version[at] if at < len(locked.workflow_version) else None
            if expected != step.name:
                raise StepError(
                    f"workflow {spec.name} changed under the running process: step {at + 1} "
                    f"is now {step.name!r}, was {expected!r}"
                )
            if state is None or since is None or position != at:
                # First step of this run, or someone else moved the process on: read the state.
                state, since = statelog.rebuild(process_id)
            return _execute(locked, step, state, since, started, lease)
    except Exception as exc:
        if connection_lost(exc):
            drop_connection()
            raise ConnectionLost(label, exc) from exc
        record_failure(process_id, exc, started, state)
        return _Outcome(False)
    finally:
        if step_context is not None:
            logcontext.reset_step(step_context)


def _execute(locked: steplog.Locked, step: Step, state: dict[str, Any], since: statelog.Since, started: Any,
             lease: leases.Lease) -> _Outcome:
    """Run `step` inside the current transaction, then log it and move the process on."""
    if step.kind in (StepKind.INPUT, StepKind.ABORT) and (step.condition is None or step.condition(state)):
        return _stop_at(locked, step, state, started)
    # A callback step decides on its condition before it asks (processes.waits), not again once answered.
    if step.condition is not None and step.kind != StepKind.CALLBACK and not step.condition(state):
        entry = statelog.entry(state, statelog.no_change(), since)
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.SKIPPED, entry=entry,
                        started=started, finished=timezone.now(), lease=lease)
        return _Outcome(True, state, locked.current_step + 1, entry.since)

    if step.kind == StepKind.GROUP:  # one sub-step per turn (processes.groups)
        going_on = groups.run(locked, step, state, since, started, lease)
        if going_on is None:  # the process waits now (input, callback, timer), held by no run
            return _Outcome(False, released=True)
        return _Outcome(True, going_on.state, going_on.position, going_on.since)

    if step.kind in (StepKind.CALLBACK, StepKind.TIMER, StepKind.CHILDREN):
        run = {StepKind.CALLBACK: waits.run_callback, StepKind.TIMER: waits.run_timer,
               StepKind.CHILDREN: joins.run_children_step}[step.kind]
        going_on = run(locked, step, state, since, started, lease)
        if going_on is None:  # the process waits now, held by no run
            return _Outcome(False, released=True)
        return _Outcome(True, going_on[0], locked.current_step + 1, going_on[1])

    new_state, delta, runs_again = call_step(step, state, acting_user=locked.acting_user)
    # The row keeps what the step changed; the whole state only when a snapshot is due (statelog).
    entry = statelog.entry(new_state, delta, since)
    if runs_again:
        return _again(locked, step, new_state, entry, started, lease)

    if step.kind == StepKind.DONE:
        # The transition method decides the new status (and refuses an illegal one); the write is
        # the same single statement as any step's.
        process = Process.from_db(None, ["process_id", "status"], [locked.process_id, locked.status])
        process.complete()
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.COMPLETE, entry=entry,
                        started=started, finished=timezone.now(), new_status=process.status, lease=lease,
                        last=True)
        if locked.parent_id is not None:
            # The join, in this final transaction: the last child to end wakes its parent (processes.joins).
            joins.child_completed(locked, new_state)
        return _Outcome(False, released=True)
    steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, entry=entry,
                    started=started, finished=timezone.now(), lease=lease)
    return _Outcome(True, new_state, locked.current_step + 1, entry.since)


def _again(locked: steplog.Locked, step: Step, state: dict[str, Any], entry: statelog.Entry, started: Any,
           lease: leases.Lease) -> _Outcome:
    """A step that asked to run again: log this run and keep the process at the step.

    This run's writes, its log row (the state holds the step's cursor) and the process update commit
    together: a crash, failure or retry later starts the next run from exactly here, none run twice. The
    next run goes through every check of a step boundary (lease, abort, pause, workflow version).
    """
    steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, entry=entry, started=started,
                    finished=timezone.now(), lease=lease, next_step=locked.current_step)
    # Progress: a run that dies in a later run of this step is not "stuck at one step" (RECOVERY_MAX_TIMES).
    leases.forget_recoveries(locked.process_id, lease)
    return _Outcome(True, state, locked.current_step, entry.since)


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
    # A snapshot: a resume (or a look at the suspended process) starts from this row.
    ProcessStep.objects.create(
        process=process, name=step.name, status=row_status, state=state, delta=statelog.no_change(),
        created_by=process.acting_user,
        started_at=started, completed_at=timezone.now(), attempt=process.current_attempt,
    )
    process.last_step = step.name
    process.last_modified_at = timezone.now()
    process.save(update_fields=fields)
    if step.kind == StepKind.INPUT:
        let_go_waiting(process)  # or aborted now, as asked while this step ran
    return _Outcome(False, released=step.kind == StepKind.INPUT)


# The state a process was just created with, so a run in the creating thread does not read back what it
# just wrote. Only a hint: bounded, and a process whose hint fell out reads its state from the log.
_FRESH: OrderedDict[str, tuple[int, dict[str, Any], statelog.Since]] = OrderedDict()
_FRESH_MAX = 256


def remember_state(process_id: uuid.UUID, position: int, state: dict[str, Any], since: statelog.Since) -> None:
    _FRESH[str(process_id)] = (position, state, since)
    while len(_FRESH) > _FRESH_MAX:
        _FRESH.popitem(last=False)
