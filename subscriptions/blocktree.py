"""A subscription's product blocks as a tree, read from the instance tables in three queries, for display.

Read from the tables rather than through the typed domain model: the admin must show every subscription,
also one whose product declares no domain model and one whose stored values no longer fit it (which is
when staff most need to see them). Blocks of other subscriptions that this one uses (a port's node) are
part of the tree, each marked with the subscription that owns it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from subscriptions.domain import _instance_tree_sql  # the one recursive query that finds a subscription's blocks
from subscriptions.models import (
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
)

logger = logging.getLogger(__name__)


@dataclass
class BlockNode:
    """One instance of a product block: its values, and the blocks it holds under each of its fields."""

    instance_id: uuid.UUID
    block: str
    label: str
    owner_id: uuid.UUID
    # The owning subscription's description and status, for a block owned by another subscription.
    owner_description: str = ""
    owner_status: str = ""
    foreign: bool = False
    values: list[tuple[str, str]] = field(default_factory=list)
    # (the field holding it, as `ports[1]` when the field holds several; the block, None if missing).
    children: list[tuple[str, BlockNode | None]] = field(default_factory=list)
    # True when this block is shown again under itself (a cycle in the stored relations): not expanded.
    repeated: bool = False


def block_tree(subscription: Subscription) -> list[BlockNode]:
    """The subscription's root blocks, each with its values and the blocks it holds, nested. Three queries."""
    tree = _instance_tree_sql(subscription)
    instances = {
        instance.pk: instance
        for instance in SubscriptionInstance.objects.filter(pk__in=tree)
        .select_related("product_block", "subscription")
        .order_by("product_block__name", "label", "pk")
    }
    values: dict[uuid.UUID, list[tuple[str, str]]] = {}
    for instance_id, resource_type, value in (
        SubscriptionInstanceValue.objects.filter(subscription_instance__in=tree)
        .order_by("resource_type__resource_type")
        .values_list("subscription_instance_id", "resource_type__resource_type", "value")
    ):
        values.setdefault(instance_id, []).append((resource_type, value))
    children: dict[uuid.UUID, list[tuple[str, int, uuid.UUID]]] = {}
    used: set[uuid.UUID] = set()
    for parent, attr, order, child in (
        SubscriptionInstanceRelation.objects.filter(in_use_by__in=tree)
        .order_by("domain_model_attr", "order_id")
        .values_list("in_use_by_id", "domain_model_attr", "order_id", "depends_on_id")
    ):
        children.setdefault(parent, []).append((attr, order, child))
        used.add(child)

    shown: set[uuid.UUID] = set()

    def build(instance_id: uuid.UUID, path: frozenset[uuid.UUID]) -> BlockNode:
        instance = instances[instance_id]
        shown.add(instance_id)
        foreign = instance.subscription_id != subscription.pk
        node = BlockNode(
            instance_id=instance_id,
            block=instance.product_block.name,
            label=instance.label,
            owner_id=instance.subscription_id,
            owner_description=instance.subscription.description if foreign else "",
            owner_status=instance.subscription.status if foreign else "",
            foreign=foreign,
            values=values.get(instance_id, []),
            repeated=instance_id in path,
        )
        if node.repeated:
            return node  # stored relations that loop: shown once, not followed for ever
        held = children.get(instance_id, [])
        for attr, order, child in held:
            several = sum(1 for other, _, _ in held if other == attr) > 1
            # A relation to an instance the tree query did not find cannot be; shown as missing all the same.
            node.children.append((f"{attr}[{order}]" if several else attr,
                                  build(child, path | {instance_id}) if child in instances else None))
        return node

    own = [pk for pk, instance in instances.items() if instance.subscription_id == subscription.pk]
    nodes = [build(pk, frozenset()) for pk in own if pk not in used]
    # An own block no root reaches (held only in a loop of relations) is shown at the top, not hidden.
    nodes += [build(pk, frozenset()) for pk in own if pk not in shown]
    return nodes
