"""Callbacks from external systems: a callback step's token, its answer (through the token, or by hand from
staff), progress messages, deadlines that passed, and what an awaiting process waits for.

The token is the only credential of the callback routes: 32 random bytes, single-use, stored as its
SHA-256 only and compared in constant time. An answer is taken under the process's row lock, so of two
deliveries at once exactly one wins; the other finds the token used (409).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.urls import reverse
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import Conflict, InvalidInput, NotFound
from processes import leases, lookups, statelog
from processes.dberrors import connection_lost, storable_text
from processes.errors import StepError, WrongProcessStatus
from processes.executors import submit_after_commit
from processes.models import (
    CallbackProgress,
    CallbackToken,
    Process,
    ProcessGroupProgress,
    ProcessLease,
    ProcessStatus,
    ProcessStep,
    StepStatus,
)
from processes.state import to_json_value
from subscriptions.lifecycle import actor_name
from workflows.dsl import Step, StepKind, human_duration

logger = logging.getLogger(__name__)

# Who delivered an answer through the token (staff who deliver one by hand are named).
EXTERNAL = "external system"
DEFAULT_BASE_URL = "http://localhost:8000"


class CallbackClosed(Conflict):
    """The token is known but no longer takes an answer (delivered already, deadline passed, retried...)."""

    default_detail = "this callback no longer takes an answer"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    """A new callback: what the action hands to the external system (never stored in the state)."""

    token: str
    url: str
    progress_url: str
    deadline: datetime


def base_url() -> str:
    return (str(orchestrator_setting("CALLBACK_BASE_URL")) or DEFAULT_BASE_URL).rstrip("/")


def timeout_of(step: Step) -> timedelta:
    spec = step.callback
    if spec is not None and spec.timeout is not None:
        return spec.timeout
    return timedelta(seconds=float(orchestrator_setting("CALLBACK_TIMEOUT_SECONDS")))


def issue(process_id: uuid.UUID | str, step: Step, position: int, attempt: int, *, sub_step: int | None = None,
          name: str | None = None) -> Issued:
    """A token for `step`'s callback, written in the caller's transaction (the step's): if the step fails,
    the token never existed. Inside a step group, `sub_step` is the step's index in the group (at `position`)
    and `name` how it is shown (workflows.dsl.sub_step_label)."""
    now = timezone.now()
    token = secrets.token_urlsafe(32)
    deadline = now + timeout_of(step)
    CallbackToken.objects.create(process_id=process_id, step_name=name or step.name, position=position,
                                 sub_step=sub_step, attempt=attempt, token_hash=_digest(token), issued_at=now,
                                 deadline=deadline)
    kwargs = {"id": str(process_id), "token": token}
    return Issued(token, base_url() + reverse("process-callback", kwargs=kwargs),
                  base_url() + reverse("process-callback-progress", kwargs=kwargs), deadline)


def received(process_id: uuid.UUID | str, position: int, sub_step: int | None = None) -> CallbackToken | None:
    """The answer taken for the step at `position` (and inside a group, its sub-step `sub_step`) and not yet
    validated, if any."""
    return (CallbackToken.objects.filter(process_id=process_id, position=position, sub_step=sub_step,
                                         received_at__isnull=False, closed_at__isnull=True).order_by("-id").first())


def close(row: CallbackToken, reason: str) -> None:
    row.closed_at = timezone.now()
    row.closed_reason = reason
    row.save(update_fields=["closed_at", "closed_reason"])


def close_open(process_id: uuid.UUID | str, reason: str) -> int:
    """Close every callback of the process that is not closed yet (its token stops working; an answer taken
    and not validated is asked for again): on retry, skip and abort, in the caller's transaction."""
    return CallbackToken.objects.filter(process_id=process_id, closed_at__isnull=True).update(
        closed_at=timezone.now(), closed_reason=reason[:500])


def _match(process_id: uuid.UUID | str, token: str) -> CallbackToken:
    digest = _digest(token)
    found = None
    # Every token hash of the process compared, each in constant time: how long this takes tells nothing
    # of how close a guess came.
    for row in CallbackToken.objects.filter(process_id=process_id).order_by("id"):
        if hmac.compare_digest(row.token_hash, digest):
            found = row
    if found is None:
        raise NotFound(f"process {process_id} awaits no callback with this token")
    return found


def _refuse_closed(row: CallbackToken, process: Process) -> None:
    if row.received_at is not None:
        raise CallbackClosed(
            f"the callback of step {row.step_name!r} of process {process.process_id} was already delivered "
            f"(at {row.received_at:%Y-%m-%d %H:%M:%S %Z}, by {row.received_by}); a token works once")
    if row.closed_at is not None:
        raise CallbackClosed(
            f"this callback token of process {process.process_id} no longer works: {row.closed_reason} "
            f"(at {row.closed_at:%Y-%m-%d %H:%M:%S %Z})")


def _awaited_step(process: Process, action: str, row: CallbackToken) -> Step:
    spec = lookups.spec_of(process, action)
    lookups.check_version(process, spec, action)
    step = spec.steps[process.current_step] if process.current_step < len(spec.steps) else None
    if step is not None and step.kind == StepKind.GROUP:
        # A callback step inside a step group: the token says which of its sub-steps asked.
        index = row.sub_step
        step = step.substeps[index] if index is not None and index < len(step.substeps) else None
    if step is None or step.kind != StepKind.CALLBACK or step.callback is None:
        raise WrongProcessStatus(f"cannot {action} process {process.process_id}: it is not at a callback step",
                                 process_id=process.process_id)
    return step


def deliver(process_id: uuid.UUID | str, token: str | None, payload: Any, *, by: Any = None,
            reason: str = "") -> Process:
    """Take the external system's answer (`token`), or one staff deliver by hand (`token` None, `by` and a
    `reason` required): store it in the state, log it, and hand the process to the executor, which runs the
    step's validate next. 404 for an unknown process or token; 409 when the process awaits no callback, the
    token was used or closed, or its deadline passed (the step is then failed, as the sweep would)."""
    manual = token is None
    if manual:
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("cannot deliver a callback by hand without a reason: say where the answer came from",
                               errors={"reason": ["This field is required."]})
    who = actor_name(by) if manual else EXTERNAL
    action = "deliver a callback to"
    late = ""
    with transaction.atomic():
        process = lookups.lock_idle(process_id, action)
        if manual:
            row = CallbackToken.objects.filter(process=process, received_at__isnull=True,
                                               closed_at__isnull=True).order_by("-id").first()
        else:
            row = _match(process.process_id, token or "")
            _refuse_closed(row, process)
        if process.status != ProcessStatus.AWAITING_CALLBACK or row is None:
            raise WrongProcessStatus(
                f"cannot {action} process {process.process_id}: it is {process.status}, not awaiting a callback",
                process_id=process.process_id)
        step = _awaited_step(process, action, row)
        now = timezone.now()
        if now > row.deadline:
            late = expire(process, row, now, who=who)
        else:
            _take(process, row, step, payload, who, f"delivered by hand by {who}: {reason}" if manual else "", now)
            submit_after_commit(process.process_id)
    if late:
        raise CallbackClosed(f"the callback of process {process.process_id} came too late: {late}; the step "
                             f"has failed, and a retry asks the external system again")
    logger.info("process %s: callback of %r delivered by %s", process.process_id, row.step_name, who)
    return process


def _take(process: Process, row: CallbackToken, step: Step, payload: Any, who: str, note: str,
          now: datetime) -> None:
    assert step.callback is not None
    key = step.callback.result_key
    try:
        stored = to_json_value(payload, step=step.name, key=key)
    except StepError as exc:
        raise InvalidInput(f"cannot store this callback's answer: {exc}", errors={"payload": [str(exc)]}) from None
    before = lookups.current_state(process)
    if row.sub_step is None:
        state = {**before, key: stored}
    else:
        # Inside a step group the answer goes to the group's state (processes.groups), which its validate
        # reads; the log keeps the state before the group until the group's row, so this row changes nothing.
        progress = ProcessGroupProgress.objects.filter(process=process, sub_step=row.sub_step).first()
        if progress is None:
            raise WrongProcessStatus(f"cannot deliver a callback to process {process.process_id}: it is no longer "
                                     f"at step {row.step_name!r}", process_id=process.process_id)
        progress.state = {**progress.state, key: stored}
        progress.save(update_fields=["state"])
        state = before
    # A snapshot: the validate step (and a recovery of it) starts from this row.
    ProcessStep.objects.create(
        process=process, name=row.step_name, status=StepStatus.CALLBACK, state=state,
        delta=statelog.diff(before, state), error=storable_text(note, 2000), created_by=who,
        started_at=now, completed_at=now, attempt=process.current_attempt,
    )
    row.received_at = now
    row.received_by = who
    row.save(update_fields=["received_at", "received_by"])
    process.resume()
    process.run()
    process.last_step = row.step_name
    process.last_modified_at = now
    process.save(update_fields=["status", "next_retry_at", "failed_reason", "traceback", "last_step",
                                "last_modified_at"])
    leases.queue(process.process_id, fresh=True)


def add_progress(process_id: uuid.UUID | str, token: str, message: Any) -> CallbackProgress:
    """Append a progress message to an open callback; it is shown with the process and never advances it."""
    limit = int(orchestrator_setting("CALLBACK_PROGRESS_MAX_CHARS"))
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput("a progress message is a non-empty text: {\"message\": \"...\"}",
                           errors={"message": ["This field is required and must be text."]})
    if len(message) > limit or "\x00" in message:
        raise InvalidInput(f"a progress message is at most {limit} characters of text",
                           errors={"message": [f"Ensure this field has no more than {limit} characters."]})
    with transaction.atomic():
        process = lookups.get_process(process_id)
        row = _match(process.process_id, token)
        # Locked, so that two messages at once count against the limit one after the other.
        row = CallbackToken.objects.select_for_update().get(pk=row.pk)
        _refuse_closed(row, process)
        if row.progress.count() >= int(orchestrator_setting("CALLBACK_PROGRESS_MAX")):
            raise Conflict(f"the callback of process {process.process_id} already has "
                           f"{orchestrator_setting('CALLBACK_PROGRESS_MAX')} progress messages; no more are kept")
        progress = CallbackProgress.objects.create(callback=row, message=message)
        # A poller's ETag follows last_modified_at: a new message is a change to show.
        Process.objects.filter(pk=process.process_id).update(last_modified_at=timezone.now())
    return progress


def expire(process: Process, row: CallbackToken | None, now: datetime, *, who: str) -> str:
    """Fail an awaiting process (row locked by the caller) whose callback did not come in time; the reason."""
    waited = human_duration(row.deadline - row.issued_at) if row is not None else "its deadline"
    reason = f"no callback within {waited}"
    if row is not None:
        reason += f" (deadline {row.deadline:%Y-%m-%d %H:%M:%S %Z})"
        close(row, "the deadline passed")
    ProcessStep.objects.create(
        process=process, name=row.step_name if row is not None else process.last_step, status=StepStatus.FAILED,
        state=lookups.current_state(process), delta=statelog.no_change(), error=reason, error_type="CallbackTimeout",
        created_by=who, started_at=now, completed_at=now, attempt=process.current_attempt,
    )
    process.miss_callback(reason)
    # Inside a step group: the group failed, and a retry starts it again at its first sub-step.
    ProcessGroupProgress.objects.filter(process=process).delete()
    process.last_modified_at = now
    process.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "last_modified_at"])
    ProcessLease.objects.filter(process=process).delete()
    logger.warning("process %s: %s", process.process_id, reason)
    return reason


def fail_overdue(now: datetime | None = None, *, who: str = "scheduler", limit: int = 100) -> list[uuid.UUID]:
    """The sweep's part: fail each awaiting process whose callback deadline passed; return their ids.

    Each under its row lock, skipping rows another scheduler (or a delivery) holds: none is failed twice,
    and a delivery that got the lock first wins.
    """
    now = now or timezone.now()
    due = list(Process.objects.filter(status=ProcessStatus.AWAITING_CALLBACK, next_retry_at__lte=now)
               .order_by("next_retry_at").values_list("process_id", flat=True)[:limit])
    failed: list[uuid.UUID] = []
    for process_id in due:
        try:
            with transaction.atomic():
                process = (Process.objects.select_for_update(skip_locked=True)
                           .filter(pk=process_id, status=ProcessStatus.AWAITING_CALLBACK, next_retry_at__lte=now)
                           .first())
                if process is None:
                    continue
                row = CallbackToken.objects.filter(process=process, received_at__isnull=True,
                                                   closed_at__isnull=True).order_by("-id").first()
                expire(process, row, now, who=who)
        except DatabaseError as exc:
            if connection_lost(exc):
                raise  # nothing else can be done on this tick
            # One process that cannot be failed must not keep the others past their deadline: the next
            # tick tries it again.
            logger.exception("process %s: could not fail it past its callback deadline", process_id)
            continue
        failed.append(process_id)
    return failed


def waiting_for(process: Process) -> dict[str, Any] | None:
    """What a waiting process waits for, for the process page and the API detail: the callback step (since
    when, the deadline, the progress messages) or the timer (until when); None for other processes."""
    if process.status == ProcessStatus.AWAITING_CALLBACK:
        row = (CallbackToken.objects.filter(process=process, received_at__isnull=True, closed_at__isnull=True)
               .order_by("-id").first())
        if row is None:
            return None
        progress = list(row.progress.order_by("id").values("message", "created_at"))
        return {"kind": "callback", "step": row.step_name, "since": row.issued_at, "deadline": row.deadline,
                "progress": progress}
    if process.status == ProcessStatus.WAITING and not process.failed_reason and process.next_retry_at:
        return {"kind": "timer", "step": process.last_step, "since": process.last_modified_at,
                "until": process.next_retry_at, "progress": []}
    return None
