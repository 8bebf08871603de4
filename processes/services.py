"""Operations on processes, shared by manage.py commands, the API and the admin (one implementation each)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from orchestrator_site.errors import Conflict, InvalidInput
from processes import callbacks, engine, operations
from processes.errors import WorkflowRemoved, WrongProcessStatus
from processes.executors import submit_after_commit
from processes.families import family_refusal
from processes.models import Process, ProcessStatus, ProcessSubscription
from processes.startable import (  # noqa: F401  (re-exported: the one place callers import them from)
    Holder,
    Refusal,
    allowed,
    holding_processes,
    holds,
    lock_with_neighbours,
    predicate_refusals,
    reasons_not_startable,
    workflows_for,
)
from processes.steplog import ChildOf
from subscriptions.errors import StaleSubscription
from subscriptions.lifecycle import actor_name
from subscriptions.models import Subscription, SubscriptionLifecycleEvent
from subscriptions.services import get_subscription
from workflows.errors import SubscriptionOutOfSync, WorkflowNotStartable
from workflows.forms import validate_input
from workflows.models import Workflow
from workflows.registry import WorkflowSpec, get_workflow
from workflows.sync import workflow_row

logger = logging.getLogger(__name__)


def _authorize(spec: WorkflowSpec, user: Any, subscription: Subscription | None, action: str) -> None:
    if not allowed(spec, user, subscription):
        raise PermissionDenied(f"you may not {action} {spec.name}")


def _authorize_process(process_id: uuid.UUID | str, user: Any, action: str, *, removed_ok: bool = False) -> None:
    """Ask the process's workflow whether `user` may `action` it (with the subscription it works on).

    A workflow removed from code is WorkflowRemoved (409) for everything but `removed_ok` actions (abort).
    """
    process = engine.get_process(process_id)
    try:
        spec = engine.spec_of(process, action)
    except WorkflowRemoved:
        if removed_ok:
            return
        raise
    link = ProcessSubscription.objects.filter(process=process).select_related("subscription__product").first()
    _authorize(spec, user, link.subscription if link else None, action)


def start_process(
    workflow_name: str,
    *,
    subscription_id: uuid.UUID | str | None = None,
    user_input: Any = None,
    by: Any = None,
    subscription_version: int | None = None,
) -> Process:
    """Validate, check the subscription, create the process and hand it to the executor.

    Everything is checked before anything is written: a refused start leaves no process behind.
    `subscription_version` is the version of the subscription the client saw: when it is no longer
    the current one, the start is refused (409) instead of acting on a subscription the user has not seen.
    """
    spec = get_workflow(workflow_name)
    if spec.branch_of:
        raise WorkflowNotStartable(f"cannot start {spec.name}: it is a branch of a parallel step of {spec.branch_of}, "
                                   f"and runs only inside that workflow's processes")
    validated = _checked_input(spec, subscription_id, user_input)
    process = _start(spec, subscription_id, validated, by=by, subscription_version=subscription_version)
    logger.info("process %s: started %s by %s", process.process_id, spec.name, process.created_by)
    return engine.get_process(process.process_id)


def start_child(spec: WorkflowSpec, *, parent: ChildOf, user_input: Any, by: Any) -> Process:
    """Start a child process of `spec` for one item of a parent's children step (processes.joins), in the
    caller's transaction (the parent step's): the same checks as any start, then linked to its parent.

    A branch of a parallel step gets the parent's state as it is (checked when the parent got it); a
    sub-process's item is checked by the child workflow's form, and its `subscription_id` is the
    subscription the child works on.
    """
    if spec.branch_of:
        validated, subscription_id = dict(user_input), None
    else:
        item = dict(user_input)
        subscription_id = item.pop("subscription_id", None) if spec.needs_subscription else None
        validated = _checked_input(spec, subscription_id, item)
    return _start(spec, subscription_id, validated, by=by, child=parent)


def _ancestors(child: ChildOf | None) -> frozenset[uuid.UUID]:
    """The parent of a child being started, its parent, and so on up (a few rows: composition is shallow)."""
    found: set[uuid.UUID] = set()
    current = child.parent_id if child is not None else None
    while current is not None:
        pk = current if isinstance(current, uuid.UUID) else uuid.UUID(str(current))
        if pk in found:
            break
        found.add(pk)
        current = Process.objects.filter(pk=pk).values_list("parent_id", flat=True).first()
    return frozenset(found)


def _checked_input(spec: WorkflowSpec, subscription_id: Any, user_input: Any) -> dict[str, Any]:
    if spec.needs_subscription and subscription_id in (None, ""):
        raise InvalidInput(
            f"cannot start {spec.name}: it works on a subscription; give the subscription's id",
            errors={"subscription": ["This field is required."]},
        )
    if not spec.needs_subscription and subscription_id not in (None, ""):
        raise InvalidInput(
            f"cannot start {spec.name}: it is a {spec.target} workflow and takes no subscription",
            errors={"subscription": ["This workflow takes no subscription."]},
        )
    return validate_input(spec.initial_input_form, user_input, what=f"input for {spec.name}")


def _start(spec: WorkflowSpec, subscription_id: Any, validated: dict[str, Any], *, by: Any,
           subscription_version: int | None = None, child: ChildOf | None = None) -> Process:
    # A child is started inside its parent's step, where any error fails that whole step (nothing of it is
    # kept): no savepoint of its own, two round trips less per child of a large fan-out.
    with transaction.atomic(savepoint=child is None):
        subscription = None
        state: dict[str, Any] = dict(validated)
        if subscription_id not in (None, ""):
            # Lock the subscription (and, for a workflow that takes it, its neighbours) while we check
            # them and create and link the process: a second start on it (or on a neighbour) waits here,
            # then finds this process holding it (409). Of racing starts exactly one is created; the unsync
            # step checks again. The same lock keeps two starts from both passing a run predicate.
            if not spec.usable_while_out_of_sync:
                lock_with_neighbours(subscription_id)
            subscription = get_subscription(subscription_id, for_update=True)
            if subscription_version is not None and subscription.version != subscription_version:
                raise StaleSubscription(
                    f"cannot start {spec.name}: stale: you saw version {subscription_version} of subscription "
                    f"{subscription.subscription_id}, it is now {subscription.version}; reload it and try again",
                    subscription_id=subscription.subscription_id,
                )
            reasons = reasons_not_startable(spec, subscription, family=_ancestors(child))
        else:
            if spec.run_predicates:
                # Serialize the starts of this task while its predicates look: two starts of a task that
                # must not run twice both find none running, unless the second waits for the first.
                Workflow.objects.select_for_update().filter(pk=workflow_row(spec).pk).exists()
            reasons = predicate_refusals(spec, None)
        if reasons:
            raise _refused(spec, reasons, subscription)
        if subscription is not None:
            state["subscription_id"] = str(subscription.subscription_id)
        _authorize(spec, by, subscription, "start")
        # A child is linked in its creating statement, in the parent step's transaction: it exists with its
        # link or not at all. The unique (parent, step, item, round) refuses a second child for the item.
        process = operations.create_process(spec, state, by=by, user_input=validated, child=child)
        if subscription is not None:
            ProcessSubscription.objects.create(process=process, subscription=subscription)
        submit_after_commit(process.process_id)
    return process


def _refused(spec: WorkflowSpec, reasons: list[Refusal], subscription: Subscription | None) -> Exception:
    """One error for all the reasons: 409 when each is about who holds what (retry later), else 412."""
    text = f"cannot start {spec.name}: " + "; ".join(reasons)
    error = SubscriptionOutOfSync if all(r.status == 409 for r in reasons) else WorkflowNotStartable
    body: dict[str, Any] = {}
    locked = [item for r in reasons for item in r.locked_relations]
    users = [item for r in reasons for item in r.in_use_by]
    if locked:
        body["locked_relations"] = locked
    if users:
        body["in_use_by"] = users
    return error(text, body=body, subscription_id=subscription.subscription_id if subscription else None)


def retry_process(process_id: uuid.UUID | str, *, by: Any = None) -> Process:
    _authorize_process(process_id, by, "retry")
    with transaction.atomic():
        process = operations.retry(process_id, by=by)
        submit_after_commit(process.process_id)
    return engine.get_process(process.process_id)


def resume_process(process_id: uuid.UUID | str, user_input: Any, *, by: Any = None) -> Process:
    _authorize_process(process_id, by, "resume")
    with transaction.atomic():
        process = operations.resume(process_id, user_input, by=by)
        submit_after_commit(process.process_id)
    return engine.get_process(process.process_id)


def deliver_callback(process_id: uuid.UUID | str, payload: Any, *, by: Any = None, reason: str = "") -> Process:
    """Staff deliver the answer an awaiting process waits for by hand (it came out of band): logged with who
    and why, then the process goes on as if the external system had called back."""
    _authorize_process(process_id, by, "deliver a callback to")
    callbacks.deliver(process_id, None, payload, by=by, reason=reason)
    return engine.get_process(process_id)


def abort_process(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """Abort now, or, while a step runs, at that step's end (the result's `abort_pending` says which)."""
    _authorize_process(process_id, by, "abort", removed_ok=True)
    return operations.abort(process_id, by=by, reason=reason)


# A task in one of these may have a worker inside (or about to enter) a step: it is not deleted under it. One
# awaiting its children is not deleted either: its children (deleted with it) may be running.
IN_FLIGHT = [ProcessStatus.CREATED, ProcessStatus.RUNNING, ProcessStatus.RESUMED, ProcessStatus.AWAITING_CHILDREN]


def delete_task(process_id: uuid.UUID | str, *, by: Any = None) -> None:
    """Delete a task's process with its log and inputs.

    Only tasks: a workflow's process is the audit record of what happened to its subscriptions, so it
    is aborted, never deleted. A task that may be running is refused; abort it first.
    """
    with transaction.atomic():
        process = engine.lock_idle(process_id, "delete")
        if not process.is_task:
            raise Conflict(
                f"cannot delete process {process.process_id}: {process.workflow.name} is not a task, and only "
                f"tasks' processes can be deleted (a workflow's process is the audit record of its "
                f"subscriptions' changes; abort it instead)",
                process_id=process.process_id,
            )
        if process.status in IN_FLIGHT:
            raise WrongProcessStatus(
                f"cannot delete task {process.process_id}: it is {process.status}; abort it first",
                process_id=process.process_id,
            )
        why = family_refusal(process)
        if why:
            raise Conflict(f"cannot delete task {process.process_id}: {why}", process_id=process.process_id)
        name, status = process.workflow.name, process.status
        process.delete()
    logger.info("process %s: task %s (%s) deleted by %s", process_id, name, status, actor_name(by))


def set_in_sync(subscription_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Subscription:
    """Mark a stuck (out-of-sync) subscription in sync again by hand, recording who did it and why.

    Refused (409) while a process that is neither completed nor aborted holds the subscription (read-only
    ones, a validation or a note, do not count: they never take it): that
    process will set it in sync itself, or must be aborted first. The subscription row is locked while
    the holders are checked, so a process starting at the same moment cannot slip in between.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(
            f"cannot set subscription {subscription_id} in sync: say why (a reason is required)",
            errors={"reason": ["This field is required."]},
        )
    with transaction.atomic():
        subscription = get_subscription(subscription_id, for_update=True)
        # Read-only processes (a validation, a note) never take the subscription, failed or not: they
        # do not keep staff from giving it back, as they keep no other workflow from starting.
        holders = [holder for holder in holding_processes(subscription) if holds(holder)]
        if holders:
            raise Conflict(
                f"cannot set subscription {subscription.subscription_id} in sync: {holders[0].describe()} "
                f"holds it; let it finish, or abort it first",
                subscription_id=subscription.subscription_id,
                process_id=holders[0].process_id,
            )
        if subscription.insync:
            raise Conflict(
                f"subscription {subscription.subscription_id} is already in sync",
                subscription_id=subscription.subscription_id,
            )
        subscription.insync = True
        subscription.save(update_fields=["insync"])
        SubscriptionLifecycleEvent.objects.create(
            subscription=subscription,
            transition="set in sync",
            from_status=subscription.status,
            to_status=subscription.status,
            changed_by=actor_name(by),
            reason=reason,
        )
    logger.info("subscription %s: set in sync by %s (%s)", subscription.subscription_id, actor_name(by), reason)
    return subscription


def skip_step(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """Skip a failed process's current step (logged with who and why) and let it run on from the next."""
    _authorize_process(process_id, by, "skip a step of")
    with transaction.atomic():
        process = operations.skip_step(process_id, by=by, reason=reason)
        submit_after_commit(process.process_id)
    return engine.get_process(process.process_id)


# The longest note a process takes: a few paragraphs for the next person on duty, not a document.
NOTE_MAX_LENGTH = 2000


def set_note(process_id: uuid.UUID | str, note: str, *, by: Any = None) -> Process:
    """Set (or, with a blank one, clear) a process's note: staff's word on it for the next person on duty.

    Any status, a completed or aborted process too; the workflow's own authorisation is not asked (a note runs
    nothing), nor does it matter whether its workflow is still in the code. Only the note changes: not the
    status, not the log, and not `last_modified_at`, which says when the process last moved (the recovery
    sweep's grace, a timer's "since", the list ordered by last change); the API's ETag takes the note in
    instead. The returned process has `note_changed` (False when the note was already this text: nothing
    was written). Refused (400, nothing written) when too long; (409) while a step holds the process longer
    than LOCK_WAIT_SECONDS.
    """
    if not isinstance(note, str):
        raise InvalidInput(f"cannot set the note of process {process_id}: a note is text",
                           errors={"note": ["Must be text."]})
    note = note.replace("\r\n", "\n").replace("\r", "\n").strip()
    if "\x00" in note:
        raise InvalidInput(f"cannot set the note of process {process_id}: it holds a NUL character",
                           errors={"note": ["Null characters are not allowed."]})
    if len(note) > NOTE_MAX_LENGTH:
        message = f"Ensure this note has at most {NOTE_MAX_LENGTH} characters (it has {len(note)})."
        raise InvalidInput(f"cannot set the note of process {process_id}: {message}", errors={"note": [message]})
    with transaction.atomic():
        # The row lock keeps two notes (or a note and a step's write) from overwriting each other; the
        # engine writes named columns only, never the note.
        process = engine.lock_idle(process_id, "change the note of")
        changed = process.note != note
        if changed:
            Process.objects.filter(pk=process.pk).update(note=note)
            process.note = note
    process.note_changed = changed  # type: ignore[attr-defined]
    if changed:
        logger.info("process %s: note %s by %s", process.process_id, "set" if note else "cleared", actor_name(by))
    return process
