"""Which subscriptions use which: block relations and subscription-id values, queried both ways.

A subscription *uses* another when one of its blocks links to a block the other owns (a port's node)
or holds a value of a resource type marked `references_subscription` naming it. Both directions cost a
constant number of queries whatever the size of the graph: `in_use_by` two, `depends_on` three.

A product block declares (`BlockModel.USER_STATUSES`) which lifecycle statuses its subscription may be
in for each status of a subscription it uses. Every status change is checked against them by
Subscription.save(), through `check_neighbours_allow`, whatever path made it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection
from django.db.models import F

from subscriptions.errors import RelationConflict
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Subscription, SubscriptionInstanceRelation, SubscriptionInstanceValue

logger = logging.getLogger(__name__)

# What a block allows unless it declares otherwise: only a terminated subscription may keep using a
# terminated one. Every other combination is allowed.
DEFAULT_USER_STATUSES: dict[str, tuple[str, ...]] = {
    SubscriptionLifecycle.TERMINATED: (SubscriptionLifecycle.TERMINATED,),
}


@dataclass(frozen=True)
class Neighbour:
    """A subscription at the other end of a relation, as much as a page or a refusal needs to name it."""

    subscription_id: uuid.UUID
    description: str
    status: str
    insync: bool
    product: str

    def describe(self) -> str:
        return f"{self.product} {self.subscription_id} ({self.description}, {self.status})"

    def as_dict(self) -> dict[str, object]:
        return {
            "subscription_id": str(self.subscription_id),
            "description": self.description,
            "status": self.status,
            "insync": self.insync,
            "product": self.product,
        }


@dataclass(frozen=True)
class Relation:
    """`user` uses `used` through `via` (a block field, or a resource value) of its block `user_block`."""

    user_id: uuid.UUID
    used_id: uuid.UUID
    user_block: str
    via: str
    other: Neighbour  # the user when listed under in_use_by, the used one under depends_on


_FIELDS = ("subscription_id", "description", "status", "insync", "product__name")


def _neighbour(row: tuple) -> Neighbour:
    return Neighbour(row[0], row[1], row[2], row[3], row[4])


def _ids(subscription_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
    return [i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in subscription_ids]


def _add(out: dict[uuid.UUID, list[Relation]], key: uuid.UUID, relation: Relation) -> None:
    # One entry per pair of subscriptions: a link using the same port twice is one relation.
    listed = out.setdefault(key, [])
    if all(r.other.subscription_id != relation.other.subscription_id for r in listed):
        listed.append(relation)


def _block_relations(ids: list[uuid.UUID], *, side: str, other: str) -> Iterable[tuple]:
    """Instance relations between subscriptions whose `side` end belongs to one of `ids`: (that id, the
    using block's name, its field, and the subscription at the `other` end), in one query."""
    return (
        SubscriptionInstanceRelation.objects.filter(**{f"{side}__subscription_id__in": ids})
        .exclude(in_use_by__subscription_id=F("depends_on__subscription_id"))
        .order_by(f"{other}__subscription_id", "domain_model_attr", "order_id")
        .values_list(f"{side}__subscription_id", "in_use_by__product_block__name", "domain_model_attr",
                     *(f"{other}__subscription__{f}" for f in _FIELDS))
    )


def in_use_by(subscription_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, list[Relation]]:
    """For each subscription, the other subscriptions that use it (two queries, whatever their number)."""
    ids = _ids(subscription_ids)
    out: dict[uuid.UUID, list[Relation]] = {i: [] for i in ids}
    if not ids:
        return out
    for used, block, attr, *other in _block_relations(ids, side="depends_on", other="in_use_by"):
        _add(out, used, Relation(other[0], used, block, f"{block}.{attr}", _neighbour(other)))
    holder = "subscription_instance__subscription__"
    values = (
        SubscriptionInstanceValue.objects.filter(
            resource_type__references_subscription=True, value__in=[str(i) for i in ids]
        )
        .order_by("subscription_instance__subscription_id", "resource_type__resource_type")
        .values_list("value", "subscription_instance__product_block__name", "resource_type__resource_type",
                     *(holder + f for f in _FIELDS))
    )
    for text, block, resource_type, *other in values:
        used = uuid.UUID(text)
        if other[0] != used:
            _add(out, used, Relation(other[0], used, block, f"{block}.{resource_type}", _neighbour(other)))
    return out


def depends_on(subscription_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, list[Relation]]:
    """For each subscription, the other subscriptions it uses (three queries, whatever their number)."""
    ids = _ids(subscription_ids)
    out: dict[uuid.UUID, list[Relation]] = {i: [] for i in ids}
    if not ids:
        return out
    for user, block, attr, *other in _block_relations(ids, side="in_use_by", other="depends_on"):
        _add(out, user, Relation(user, other[0], block, f"{block}.{attr}", _neighbour(other)))
    # Values naming other subscriptions: read the ids, then the subscriptions they name. Text to id in
    # Python, not a cast in SQL: a malformed value must not fail the query (nor, on SQLite, could it join).
    references: list[tuple[uuid.UUID, str, str, uuid.UUID]] = []
    for user, block, resource_type, text in SubscriptionInstanceValue.objects.filter(
        resource_type__references_subscription=True, subscription_instance__subscription_id__in=ids
    ).order_by("resource_type__resource_type").values_list(
        "subscription_instance__subscription_id", "subscription_instance__product_block__name",
        "resource_type__resource_type", "value",
    ):
        try:
            target = uuid.UUID(text)
        except ValueError:
            logger.warning("subscription %s: %s=%r is not a subscription id", user, resource_type, text)
            continue
        if target != user:
            references.append((user, block, resource_type, target))
    if references:
        found = {
            row[0]: _neighbour(row)
            for row in Subscription.objects.filter(pk__in={r[3] for r in references}).values_list(*_FIELDS)
        }
        for user, block, resource_type, target in references:
            if target in found:
                _add(out, user, Relation(user, target, block, f"{block}.{resource_type}", found[target]))
    return out


def neighbours(subscription_id: uuid.UUID | str) -> list[Neighbour]:
    """The subscriptions this one uses and those that use it, each once, in id order."""
    (key,) = _ids([subscription_id])
    found = {r.other.subscription_id: r.other for r in depends_on([key])[key]}
    found.update({r.other.subscription_id: r.other for r in in_use_by([key])[key]})
    return [found[i] for i in sorted(found, key=str)]


def user_statuses(block_name: str) -> dict[str, tuple[str, ...]]:
    """What block `block_name` declares: for each status of what it uses, the statuses its holder may have."""
    from subscriptions.domain import BlockModel  # the domain model builds on this app's models

    declared = getattr(BlockModel._registry.get(block_name), "USER_STATUSES", None)
    return DEFAULT_USER_STATUSES if declared is None else declared


def refusals_for_status(subscription: Subscription, status: str, *, users: list[Relation],
                        uses: list[Relation]) -> list[str]:
    """Why `subscription` may not be in `status` given its neighbours (their statuses as in the relations)."""
    problems = []
    for relation in users:
        allowed = user_statuses(relation.user_block).get(status)
        if allowed is not None and relation.other.status not in allowed:
            problems.append(f"{relation.other.describe()} still uses it")
    if status != SubscriptionLifecycle.TERMINATED:  # going away never breaks what it used
        for relation in uses:
            allowed = user_statuses(relation.user_block).get(relation.other.status)
            if allowed is not None and status not in allowed:
                problems.append(f"it uses {relation.other.describe()}, and a {relation.user_block} may not be "
                                f"{status} while what it uses is {relation.other.status}")
    return problems


def check_neighbours_allow(subscription: Subscription, *, from_status: str, transition: str) -> None:
    """Refuse a status change that would break the graph (a node terminated under an active port).

    Called by Subscription.save() inside its transaction, with this row already locked by the write.
    The neighbours' rows are locked too (in id order) before their statuses are read: a neighbour
    changing its own status at the same moment waits, or makes this one wait, so the two checks never
    both pass on statuses the other is changing.
    """
    key = subscription.pk
    users = in_use_by([key])[key]
    uses = depends_on([key])[key]
    if not users and not uses:
        return
    others = sorted({r.other.subscription_id for r in (*users, *uses)}, key=str)
    locked = Subscription.objects.filter(pk__in=others).order_by("pk")
    if connection.features.has_select_for_update:
        # FOR NO KEY UPDATE: conflicts with a neighbour's own status change, not with readers.
        locked = locked.select_for_update(no_key=True) if connection.features.has_select_for_no_key_update \
            else locked.select_for_update()
    current = dict(locked.values_list("pk", "status"))

    def fresh(relations: list[Relation]) -> list[Relation]:
        return [
            Relation(r.user_id, r.used_id, r.user_block, r.via,
                     Neighbour(r.other.subscription_id, r.other.description,
                               current.get(r.other.subscription_id, r.other.status), r.other.insync, r.other.product))
            for r in relations
        ]

    problems = refusals_for_status(subscription, subscription.status, users=fresh(users), uses=fresh(uses))
    if problems:
        raise RelationConflict(
            f"cannot {transition} {subscription.product.name} {subscription.subscription_id} "
            f"({subscription.description}): {'; '.join(problems)}",
            subscription_id=subscription.subscription_id,
            status=from_status,
            target=subscription.status,
        )
