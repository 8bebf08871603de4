"""Workflows every installation has: `modify_note` (usable while out of sync) and a system task."""

from __future__ import annotations

import logging

from rest_framework import serializers

from subscriptions.domain import BlockModel, SubscriptionModel
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Product, ProductBlock
from subscriptions.services import get_subscription
from workflows.dsl import State, StepList, begin, step
from workflows.models import Target
from workflows.registry import task, workflow
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
