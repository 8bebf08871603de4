"""The engine's side of steps that wait, holding no worker: callback steps (ask, then check the answer) and timers.

Both run inside the step's transaction (processes.engine), under the process's row lock. A step that goes
to wait writes a snapshot row, the process's new status and the moment the sweep acts (`next_retry_at`: the
callback's deadline, the timer's end) and lets its run record go, all in that transaction: from its commit
on, no worker holds the process, and a worker killed after it loses nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from processes import callbacks, leases, statelog, steplog
from processes.errors import StepError
from processes.lookups import get_process
from processes.models import ProcessStep, StepStatus
from processes.records import let_go_waiting
from processes.steps import call_step, call_timer
from workflows.dsl import Step

logger = logging.getLogger(__name__)

# What a waiting step returns to the engine: the state and log position to continue with, or None (the
# process waits now; the run ends).
Continue = tuple[dict[str, Any], statelog.Since] | None


def run_callback(locked: steplog.Locked, step: Step, state: dict[str, Any], since: statelog.Since,
                 started: datetime, lease: leases.Lease) -> Continue:
    """A callback step: check the answer if one was taken for it, else run the action and await the answer."""
    assert step.callback is not None
    answer = callbacks.received(locked.process_id, locked.current_step)
    if answer is None and step.condition is not None and not step.condition(state):
        # Not asked: skipped like any step whose condition is false. Once asked, the answer is always checked
        # (the condition may read what the answer changed).
        entry = statelog.entry(state, statelog.no_change(), since)
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.SKIPPED, entry=entry, started=started,
                        finished=timezone.now(), lease=lease)
        return state, entry.since
    if answer is not None:
        # The answer is in the state (the delivery's row); validate checks it like any step, and a failure
        # here is a failure of this step (a retry asks the external system again: processes.operations).
        new_state, delta = state, statelog.no_change()
        if step.callback.validate is not None:
            new_state, delta, again = call_step(step.callback.validate, state, acting_user=locked.acting_user)
            if again:
                raise StepError(f"the validate step of {step.name!r} returned again(...): it cannot run again")
        entry = statelog.entry(new_state, delta, since)
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, entry=entry, started=started,
                        finished=timezone.now(), lease=lease)
        callbacks.close(answer, "answer validated")
        return new_state, entry.since

    issued = callbacks.issue(locked.process_id, step, locked.current_step, locked.current_attempt)
    extra = {"callback_url": issued.url, "callback_token": issued.token, "callback_progress_url": issued.progress_url}
    new_state, delta, again = call_step(step, state, acting_user=locked.acting_user, extra=extra)
    if again:
        raise StepError(f"callback step {step.name!r} returned again(...): a callback step's action runs once")
    process = get_process(locked.process_id)  # its row is already locked by this transaction
    now = timezone.now()
    # A snapshot: the delivery of the answer, and a retry, start from this row.
    ProcessStep.objects.create(
        process=process, name=step.name, status=StepStatus.AWAITING_CALLBACK, state=new_state, delta=delta,
        created_by=locked.acting_user, started_at=started, completed_at=now, attempt=process.current_attempt,
    )
    process.await_callback(issued.deadline)
    process.last_step = step.name
    process.last_modified_at = now
    process.save(update_fields=["status", "next_retry_at", "last_step", "last_modified_at"])
    if let_go_waiting(process):
        return None
    logger.info("process %s: awaiting the callback of %r until %s", process.process_id, step.name, issued.deadline)
    return None


def run_timer(locked: steplog.Locked, step: Step, state: dict[str, Any], since: statelog.Since,
              started: datetime, lease: leases.Lease) -> Continue:
    """A timer: wait until the moment its function names (the sweep wakes the process), or go on at once
    when that moment is not in the future."""
    until = moment(step, call_timer(step, state, acting_user=locked.acting_user))
    now = timezone.now()
    if until is None or until <= now:
        entry = statelog.entry(state, statelog.no_change(), since)
        steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, entry=entry, started=started,
                        finished=now, lease=lease)
        return state, entry.since
    process = get_process(locked.process_id)
    ProcessStep.objects.create(
        process=process, name=step.name, status=StepStatus.WAITING, state=state, delta=statelog.no_change(),
        created_by=locked.acting_user, started_at=started, completed_at=now, attempt=process.current_attempt,
    )
    # The timer is done once the sweep wakes the process: it continues with the step after it.
    process.sleep(until)
    process.current_step += 1
    process.current_attempt = 1
    process.last_step = step.name
    process.last_modified_at = now
    process.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "current_step",
                                "current_attempt", "last_step", "last_modified_at"])
    if let_go_waiting(process):
        return None
    logger.info("process %s: timer %r waits until %s", process.process_id, step.name, until)
    return None


def moment(step: Step, value: Any) -> datetime | None:
    """The moment a timer's function named (`value`), checked: an aware datetime, or None for no wait."""
    if value is None:
        return None
    when = parse_datetime(value) if isinstance(value, str) else value
    if not isinstance(when, datetime):
        raise StepError(f"timer {step.name!r} returned {value!r}: a timer returns the moment to wait for (an aware "
                        f"datetime or ISO 8601 text with its time zone), or None")
    if timezone.is_naive(when):
        raise StepError(f"timer {step.name!r} returned {value!r}, a moment without a time zone: say which "
                        f"(an aware datetime, or ISO 8601 text ending in Z or +HH:MM)")
    return when
