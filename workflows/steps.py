"""The standard steps the target wrappers put around a workflow's body."""

from __future__ import annotations

import logging

from django.db import transaction

from subscriptions.domain import SubscriptionModel
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Product
from subscriptions.services import get_subscription
from subscriptions.snapshot import snapshot
from workflows.dsl import State, Step, step
from workflows.errors import SubscriptionOutOfSync, WorkflowNotStartable
from workflows.process_links import process_links

logger = logging.getLogger(__name__)


@step("Create subscription")
def create_subscription(product: str, customer_id: str, process_id: str, acting_user: str,
                        description: str = "") -> State:
    """A new subscription of the chosen product, provisioning and out of sync until the workflow ends."""
    chosen = Product.objects.get(pk=product)
    model = SubscriptionModel.model_for(chosen).new(
        chosen, customer_id, description or f"{chosen.name} for {customer_id}"
    )
    model.subscription.provision(by=acting_user, process_id=process_id)
    model.save()
    return {"subscription_id": str(model.subscription.subscription_id)}


@step("Link subscription to process")
def link_subscription(subscription_id: str, process_id: str) -> State:
    # The processes app owns the link table and writes it for the step (workflows.process_links).
    process_links().link(process_id, subscription_id)
    return {}


def _take(subscription_id: str, process_id: str, workflow: str, *, reconcile: bool) -> State:
    """Take the subscription for this process and keep a copy of it as it was (the before-image)."""
    with transaction.atomic():
        # Lock first, then check: of two processes racing here, the second waits for the first's
        # step to commit and then sees insync already false (or the status the first left it in).
        subscription = get_subscription(subscription_id, for_update=True)
        allowed = _allowed_statuses(workflow)
        if allowed and subscription.status not in allowed:
            # What was checked at the start no longer holds: another workflow (a terminate, say) ended
            # in between. Acting now would change a subscription this workflow may not touch.
            raise WorkflowNotStartable(
                f"subscription {subscription.subscription_id} is {subscription.status} now; {workflow} may run "
                f"only on {', '.join(allowed)} subscriptions, so it does not touch it",
                subscription_id=subscription.subscription_id,
            )
        if not subscription.insync:
            holders = process_links().other_holders(subscription_id, process_id)
            if holders or not reconcile:
                held = f" (held by {holders[0]})" if holders else ""
                raise SubscriptionOutOfSync(
                    f"subscription {subscription.subscription_id} is already out of sync{held}; "
                    f"another process is working on it",
                    subscription_id=subscription.subscription_id,
                )
        # Before it changes anything: what the process page shows its changes against. Taken under the
        # lock, so no other change can fall between this copy and the process's own work.
        before = snapshot(subscription)
        subscription.insync = False
        subscription.save(update_fields=["insync"])
    return {"subscription_before": before}


@step("Unsync")
def unsync(subscription_id: str, process_id: str, workflow: str = "") -> State:
    """Take the subscription for this process: lock its row, refuse if another process already has it, or
    if it is no longer in a lifecycle status the workflow may run on. Keeps the before-image in the state."""
    return _take(subscription_id, process_id, workflow, reconcile=False)


@step("Unsync for reconcile")
def unsync_for_reconcile(subscription_id: str, process_id: str, workflow: str = "") -> State:
    """Unsync, also when the subscription is out of sync with no process holding it (drift to reconcile)."""
    return _take(subscription_id, process_id, workflow, reconcile=True)


def _allowed_statuses(workflow: str) -> tuple[str, ...]:
    from workflows.registry import get_workflow

    return get_workflow(workflow).allowed_statuses if workflow else ()


@step("Resync")
def resync(subscription_id: str) -> State:
    """Give the subscription back, in sync, and keep a copy of it as the process leaves it (the after-image)."""
    subscription = get_subscription(subscription_id, for_update=True)
    subscription.insync = True
    subscription.save(update_fields=["insync"])
    return {"subscription_after": snapshot(subscription)}


def _set_status(target: str) -> Step:
    @step(f"Set subscription {target}")
    def set_status(subscription_id: str, process_id: str, acting_user: str) -> State:
        """Move the subscription to `target`; save() refuses it while its domain model is invalid there.

        For a create workflow's set_active that means a body that left a required field empty fails
        here, naming the field, with nothing changed; fix the data (or the workflow) and retry.
        """
        subscription = get_subscription(subscription_id, for_update=True)
        if subscription.status != target:
            subscription.transition_to(target, by=acting_user, process_id=process_id)
            subscription.save()
        return {}

    return set_status


set_active = _set_status(SubscriptionLifecycle.ACTIVE)
set_terminated = _set_status(SubscriptionLifecycle.TERMINATED)
