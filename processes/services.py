"""Operations on processes, shared by manage.py commands, the API and the admin (one implementation each)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from orchestrator_site.errors import Conflict, InvalidInput
from processes import engine, operations
from processes.errors import WorkflowRemoved, WrongProcessStatus
from processes.executors import submit_after_commit
from processes.models import FINISHED, Process, ProcessStatus, ProcessSubscription
from subscriptions.lifecycle import actor_name
from subscriptions.models import Subscription, SubscriptionLifecycleEvent
from subscriptions.services import get_subscription
from workflows.errors import SubscriptionOutOfSync, WorkflowNotStartable
from workflows.forms import validate_input
from workflows.registry import WorkflowSpec, all_workflows, get_workflow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    process_id: uuid.UUID
    workflow: str
    status: str

    def describe(self) -> str:
        return f"process {self.process_id} ({self.workflow}, {self.status})"


def holding_processes(subscription: Subscription) -> list[Holder]:
    """Unfinished processes linked to the subscription, newest first: who holds it out of sync."""
    rows = (
        ProcessSubscription.objects.filter(subscription=subscription)
        .exclude(process__status__in=FINISHED)
        .order_by("-process__started_at")
        .values_list("process_id", "process__workflow__name", "process__status")
    )
    return [Holder(*row) for row in rows]


def holds(holder: Holder, workflows: dict[str, WorkflowSpec] | None = None) -> bool:
    """Whether an unfinished process keeps others off its subscription: all do, except those of workflows
    declared usable while out of sync (read-only ones, which never take the subscription). A process whose
    workflow left the code is counted as holding: nobody can say what it would still do."""
    spec = (workflows if workflows is not None else all_workflows()).get(holder.workflow)
    return spec is None or not spec.usable_while_out_of_sync


def reasons_not_startable(spec: WorkflowSpec, subscription: Subscription, *, user: Any = None
                          ) -> list[tuple[int, str]]:
    """Why `spec` cannot start on `subscription` now, as (status code, message); empty when it can.

    With `user`, the workflow's own authorize hook is asked too (403), so nothing is offered that a start
    would then refuse.
    """
    reasons: list[tuple[int, str]] = []
    product = subscription.product
    if spec.product_types and product.product_type not in spec.product_types:
        reasons.append((412, f"{spec.name} does not serve product {product.name} ({product.product_type})"))
    if spec.allowed_statuses and subscription.status not in spec.allowed_statuses:
        reasons.append((412, f"subscription {subscription.subscription_id} is {subscription.status}; {spec.name} "
                             f"may start only on {', '.join(spec.allowed_statuses)} subscriptions"))
    if not spec.usable_while_out_of_sync:
        workflows = all_workflows()
        holders = [h for h in holding_processes(subscription) if holds(h, workflows)]
        if not subscription.insync:
            held = (f"{holders[0].describe()} is running on it" if holders
                    else "no unfinished process holds it; staff can set it in sync")
            reasons.append((409, f"subscription {subscription.subscription_id} is out of sync ({held})"))
        elif holders:
            # Started, not yet at its unsync step: it holds the subscription all the same.
            reasons.append((409, f"subscription {subscription.subscription_id} is held by {holders[0].describe()}, "
                                 f"which has not finished"))
    if user is not None and not _allowed(spec, user, subscription):
        reasons.append((403, f"you may not start {spec.name}"))
    return reasons


def workflows_for(subscription: Subscription, *, user: Any = None) -> list[tuple[WorkflowSpec, list[str]]]:
    """Every workflow for the subscription's product, with the reasons it cannot start now (none: allowed);
    with `user`, including that the workflow's authorize hook refuses them."""
    out = []
    for spec in all_workflows().values():
        if not spec.needs_subscription and not spec.usable_while_out_of_sync:
            continue
        if spec.product_types and subscription.product.product_type not in spec.product_types:
            continue
        reasons = reasons_not_startable(spec, subscription, user=user)
        out.append((spec, [message for _, message in reasons]))
    return out


def _allowed(spec: WorkflowSpec, user: Any, subscription: Subscription | None) -> bool:
    # Only a real user is asked about; a name (commands, the scheduler) acts with the system's authority.
    if spec.authorize is None or user is None or isinstance(user, str):
        return True
    return bool(spec.authorize(user, spec, subscription))


def _authorize(spec: WorkflowSpec, user: Any, subscription: Subscription | None, action: str) -> None:
    if not _allowed(spec, user, subscription):
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
) -> Process:
    """Validate, check the subscription, create the process and hand it to the executor.

    Everything is checked before anything is written: a refused start leaves no process behind.
    """
    spec = get_workflow(workflow_name)
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
    validated = validate_input(spec.initial_input_form, user_input, what=f"input for {spec.name}")
    with transaction.atomic():
        subscription = None
        state: dict[str, Any] = dict(validated)
        if subscription_id not in (None, ""):
            # Lock the subscription while we check it and create and link the process: a second start on
            # it waits here, then finds this process holding it (409). Of racing starts exactly one is
            # created; the unsync step still checks again under its own lock.
            subscription = get_subscription(subscription_id, for_update=True)
            reasons = reasons_not_startable(spec, subscription)
            if reasons:
                status, _ = reasons[0]
                text = f"cannot start {spec.name}: " + "; ".join(message for _, message in reasons)
                error = SubscriptionOutOfSync if status == 409 and len(reasons) == 1 else WorkflowNotStartable
                raise error(text, subscription_id=subscription.subscription_id)
            state["subscription_id"] = str(subscription.subscription_id)
        _authorize(spec, by, subscription, "start")
        process = operations.create_process(spec, state, by=by, user_input=validated)
        if subscription is not None:
            ProcessSubscription.objects.create(process=process, subscription=subscription)
        submit_after_commit(process.process_id)
    logger.info("process %s: started %s by %s", process.process_id, spec.name, process.created_by)
    return engine.get_process(process.process_id)


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


def abort_process(process_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Process:
    """Abort now, or, while a step runs, at that step's end (the result's `abort_pending` says which)."""
    _authorize_process(process_id, by, "abort", removed_ok=True)
    return operations.abort(process_id, by=by, reason=reason)


# A task in one of these may have a worker inside (or about to enter) a step: it is not deleted under it.
IN_FLIGHT = [ProcessStatus.CREATED, ProcessStatus.RUNNING, ProcessStatus.RESUMED]


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
        name, status = process.workflow.name, process.status
        process.delete()
    logger.info("process %s: task %s (%s) deleted by %s", process_id, name, status, actor_name(by))


def set_in_sync(subscription_id: uuid.UUID | str, *, by: Any = None, reason: str = "") -> Subscription:
    """Mark a stuck (out-of-sync) subscription in sync again by hand, recording who did it and why.

    Refused (409) while a process that is neither completed nor aborted holds the subscription: that
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
        holders = holding_processes(subscription)
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
