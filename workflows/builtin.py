"""Workflows every installation has: `modify_note` (usable while out of sync), `modify_subscription_details`
(description, customer and dates, the only way staff change them) and a system task."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from subscriptions.domain import BlockModel, SubscriptionModel
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Product, ProductBlock, Subscription
from subscriptions.services import get_subscription
from workflows.dsl import State, StepList, begin, step
from workflows.models import Target
from workflows.registry import modify_workflow, task, workflow
from workflows.steps import link_subscription

logger = logging.getLogger(__name__)


class NoteForm(serializers.Serializer):
    note = serializers.CharField(allow_blank=True, max_length=5000, help_text="The new note (replaces the old).")


@step("Update note")
def update_note(subscription_id: str, note: str) -> State:
    subscription = get_subscription(subscription_id, for_update=True)
    old = subscription.note
    subscription.note = note
    subscription.save(update_fields=["note"])
    return {"old_note": old}


@workflow(
    "Modify the note of a subscription",
    target=Target.MODIFY,
    initial_input_form=NoteForm,
    usable_while_out_of_sync=True,
    allowed_statuses=list(SubscriptionLifecycle.values),
)
def modify_note() -> StepList:
    # No unsync/resync: a note is not network state, so staff may annotate a subscription a process holds.
    return begin >> link_subscription >> update_note


# --- modify_subscription_details ------------------------------------------------------------------------
DETAILS = ("description", "customer_id", "start_date", "end_date")


class SubscriptionDetailsForm(serializers.Serializer):
    """The subscription's details as they should be afterwards: all four, not only those that change.

    A whole set, so that every rule is checked here, before any process exists: an end date before the
    start date is refused whichever of the two the user meant to change. The admin's start page shows the
    current details first (initial_for); an API client sends them back with its change.
    """

    description = serializers.CharField(max_length=500, help_text="What the subscription is, for people.")
    customer_id = serializers.CharField(max_length=100, help_text="The customer the subscription is for.")
    start_date = serializers.DateTimeField(help_text="When the subscription started.")
    end_date = serializers.DateTimeField(
        required=False, allow_null=True, default=None,
        help_text="When it ends (or ended); empty or null: no end date.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        end, start = attrs.get("end_date"), attrs.get("start_date")
        if end is not None and start is not None and end < start:
            raise serializers.ValidationError({"end_date": ["The end date may not be before the start date."]})
        return attrs

    @classmethod
    def initial_for(cls, subscription: Subscription) -> dict[str, Any]:
        """The current details, for a form to start from."""
        return {name: getattr(subscription, name) for name in DETAILS}


def _same(old: Any, new: Any) -> bool:
    # Dates to the second: the admin's form shows them to the second, so a date the user left alone comes
    # back without its microseconds and must not count as changed (nor lose them).
    if isinstance(old, dt.datetime) and isinstance(new, dt.datetime):
        return old.replace(microsecond=0) == new.replace(microsecond=0)
    return old == new


def _shown(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


@step("Update subscription details")
def update_details(subscription_id: str, description: str, customer_id: str, start_date: str,
                   acting_user: str, end_date: str | None = None) -> State:
    """Write the details that differ, and record each with its old and new value (and who changed them).

    A form that repeats the current details completes with `changed` empty and an `outcome` saying that
    nothing changed: by then the process exists (the start cannot compare with the subscription), and a
    failed process would leave the subscription out of sync for nothing.
    """
    subscription = get_subscription(subscription_id, for_update=True)
    wanted = {
        "description": description,
        "customer_id": customer_id,
        "start_date": parse_datetime(start_date),
        "end_date": parse_datetime(end_date) if end_date else None,
    }
    changed: dict[str, dict[str, Any]] = {}
    for name, new in wanted.items():
        old = getattr(subscription, name)
        if not _same(old, new):
            changed[name] = {"old": _shown(old), "new": _shown(new)}
            setattr(subscription, name, new)
    if changed:
        subscription.save(update_fields=list(changed))
        outcome = f"changed {', '.join(changed)}"
    else:
        outcome = "nothing changed: the form repeated the subscription's current details"
    logger.info("subscription %s: details by %s: %s", subscription_id, acting_user, outcome)
    return {"changed": changed, "changed_by": acting_user, "outcome": outcome}


@modify_workflow(
    "Modify the description, customer or dates of a subscription",
    initial_input_form=SubscriptionDetailsForm,
    # Active and disabled: the statuses a subscription lives in. Before that its create workflow sets
    # these details, while migrating its migration holds it, and once terminated it is a closed record.
    allowed_statuses=[SubscriptionLifecycle.ACTIVE, SubscriptionLifecycle.DISABLED],
)
def modify_subscription_details() -> StepList:
    # The standard modify steps around it (link, unsync, this, resync): no other workflow changes the
    # subscription meanwhile, and the process is the record of who changed what, when.
    return begin >> update_details


@step("Check products against their domain models")
def check_domain_models() -> State:
    """Every product whose type has a domain model must have the blocks and resource types it declares."""
    problems: list[str] = []
    blocks = {b.name: b for b in ProductBlock.objects.prefetch_related("resource_types")}
    for product in Product.objects.prefetch_related("product_blocks"):
        model = SubscriptionModel._registry.get(product.product_type)
        if model is None:
            continue
        product_blocks = {b.name for b in product.product_blocks.all()}
        for name, spec in model.fields().items():
            if spec.type.__block_name__ not in product_blocks:
                problems.append(f"product {product.name}: block {spec.type.__block_name__} ({name}) is missing")
    for block_class in BlockModel._registry.values():
        row = blocks.get(block_class.__block_name__)
        if row is None:
            continue
        carried = {rt.resource_type for rt in row.resource_types.all()}
        for name, spec in block_class.fields().items():
            if spec.kind == "scalar" and name not in carried:
                problems.append(f"product block {row.name}: resource type {name} is missing")
    if problems:
        raise ValueError("; ".join(problems))
    return {"checked_products": Product.objects.count()}


@task("Check that products match their typed domain models")
def task_check_products() -> StepList:
    return begin >> check_domain_models
