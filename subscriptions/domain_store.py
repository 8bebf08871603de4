"""How a typed domain model is read from and written to the instance tables (SubscriptionModel's storage).

Reading costs four queries whatever the number of blocks (one recursive query finds the instances, used
as a subquery by the three that read them); writing validates first, then touches only the rows that
changed, with the subscription's version bump, in one transaction.
"""

from __future__ import annotations

import logging
import typing
import uuid
from typing import TYPE_CHECKING, Any, Self

from django.db import connection, transaction
from django.db.models import ProtectedError
from django.db.models.expressions import RawSQL

from subscriptions.errors import DomainModelError
from subscriptions.models import (
    ProductBlock,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
)

if TYPE_CHECKING:
    from subscriptions.domain import BlockModel

logger = logging.getLogger(__name__)

# The subscription's own columns a workflow may change through the model (status goes through the
# lifecycle transitions of `model.subscription`, version through save()).
EDITABLE_COLUMNS: tuple[str, ...] = ("description", "customer_id", "note", "insync", "start_date", "end_date")


class StoredModel:
    """The storage half of SubscriptionModel: `_read` (load's four queries) and `save` with its writes."""

    subscription: Subscription

    @classmethod
    def _read(cls, subscription: Subscription) -> Self:
        """The model of `subscription` as stored, read without touching the subscription object.

        load() without its bookkeeping, for Subscription.save() to check the stored blocks against a
        new status: a refused save must not leave the subscription looking saved to a model holding it.
        """
        # Every instance reachable from this subscription's own instances, also through instances
        # of other subscriptions it depends on, found by one recursive query. The three queries below
        # each use it as a subquery, so loading costs the same whatever the number of blocks.
        tree = _instance_tree_sql(subscription)
        instances = {
            i.pk: i
            for i in SubscriptionInstance.objects.filter(pk__in=tree).select_related("product_block")
        }
        values: dict[uuid.UUID, dict[str, str]] = {}
        for row in SubscriptionInstanceValue.objects.filter(subscription_instance__in=tree).values_list(
            "subscription_instance_id", "resource_type__resource_type", "value"
        ):
            values.setdefault(row[0], {})[row[1]] = row[2]
        relations = list(
            SubscriptionInstanceRelation.objects.filter(in_use_by__in=tree).values_list(
                "in_use_by_id", "domain_model_attr", "order_id", "depends_on_id"
            )
        )
        children: dict[uuid.UUID, list[tuple[str, int, uuid.UUID]]] = {}
        used: set[uuid.UUID] = set()
        for parent, attr, order, child in relations:
            children.setdefault(parent, []).append((attr, order, child))
            used.add(child)

        built: dict[uuid.UUID, BlockModel] = {}

        def build(instance_id: uuid.UUID, expected: type[BlockModel], path: str) -> BlockModel:
            if instance_id in built:
                return built[instance_id]
            instance = instances[instance_id]
            if instance.product_block.name != expected.__block_name__:
                raise DomainModelError(
                    f"{path}: instance {instance_id} is a {instance.product_block.name}, "
                    f"but {cls.__name__} declares {expected.__block_name__}"
                )
            block = expected.__new__(expected)
            object.__setattr__(block, "_instance_id", instance_id)
            object.__setattr__(block, "_owner_id", instance.subscription_id)
            object.__setattr__(block, "_label", instance.label)
            built[instance_id] = block
            own_values = values.get(instance_id, {})
            grouped: dict[str, list[tuple[int, uuid.UUID]]] = {}
            for attr, order, child in children.get(instance_id, []):
                grouped.setdefault(attr, []).append((order, child))
            for name, spec in expected.fields().items():
                if spec.kind == "scalar":
                    object.__setattr__(block, name, spec.parse(expected.__block_name__, own_values.get(name)))
                elif spec.kind == "block":
                    linked = sorted(grouped.get(name, []))
                    child_block = build(linked[0][1], spec.type, f"{path}.{name}") if linked else None
                    object.__setattr__(block, name, child_block)
                else:
                    linked = sorted(grouped.get(name, []))
                    items = [build(child, spec.type, f"{path}.{name}[{o}]") for o, child in linked]
                    object.__setattr__(block, name, items)
            object.__setattr__(block, "_loaded", block._scalar_texts())
            object.__setattr__(block, "_loaded_children", block._child_ids())
            return block

        roots = [i for i in instances.values() if i.subscription_id == subscription.pk and i.pk not in used]
        model = cls.__new__(cls)
        object.__setattr__(model, "subscription", subscription)
        # Only this subscription's own relations: the tree also holds those of blocks it uses from
        # other subscriptions (a port's link to its node), which save() must never see as stale.
        object.__setattr__(model, "_loaded_relations", {
            r for r in relations if instances[r[0]].subscription_id == subscription.pk
        })
        object.__setattr__(model, "_loaded_instances", {
            pk: i.product_block.name for pk, i in instances.items() if i.subscription_id == subscription.pk
        })
        for name, spec in cls.fields().items():
            matching = [r for r in roots if r.product_block.name == spec.type.__block_name__]
            if len(matching) > 1:
                # Two root fields of the same block: the instance label says which is which.
                matching = [r for r in matching if r.label == name] or matching[:1]
            if spec.kind == "list":
                value: Any = [build(r.pk, spec.type, f"{cls.__name__}.{name}") for r in matching]
            else:
                value = build(matching[0].pk, spec.type, f"{cls.__name__}.{name}") if matching else None
            object.__setattr__(model, name, value)
        return model

    # --- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        """Validate, then write back in one transaction, touching only rows that changed."""
        self.validate()
        subscription = self.subscription
        with transaction.atomic():
            blocks = list(self._walk())
            owned = [b for b in blocks if b._owner_id in (None, subscription.pk)]
            for block in blocks:
                # A foreign block changes by a new value or by linking to other blocks; both are its
                # owner's business (and neither would be written here).
                if block._owner_id not in (None, subscription.pk) and (
                    block._scalar_texts() != block._loaded or block._child_ids() != block._loaded_children
                ):
                    raise DomainModelError(
                        f"{block.__block_name__} {block._instance_id} belongs to subscription {block._owner_id}; "
                        f"change it through a workflow on that subscription"
                    )

            new_blocks = [b for b in owned if b._instance_id is None]
            value_writes = [(b, n, t) for b in owned for n, t in b._scalar_texts().items()
                            if (b._loaded or {}).get(n) != t]
            desired_relations = set(self._relations())
            reachable = {b._instance_id for b in owned if b._instance_id is not None}
            orphaned = [pk for pk in self._loaded_instances if pk not in reachable]
            if not (new_blocks or value_writes or orphaned or desired_relations != self._loaded_relations
                    or subscription._state.adding or _columns_changed(subscription)):
                return  # nothing changed: no writes, no version bump
            if orphaned:
                # Refused before the first write, so a refused save leaves this model as it was (its
                # version not bumped, its new blocks without ids), to be corrected and saved again.
                users = SubscriptionInstanceRelation.objects.filter(depends_on__in=orphaned).exclude(
                    in_use_by__subscription=subscription
                ).values_list("in_use_by__subscription_id", flat=True)
                if users:
                    raise _still_used(subscription, {str(user) for user in users})

            # If anything below fails, the transaction rolls back; put this model back as it was too
            # (version, pending lifecycle events, new blocks without ids), so it can be corrected and
            # saved again instead of failing as stale.
            before = (subscription.version, subscription._state.adding,
                      list(subscription.__dict__.get("_pending_events", [])))
            try:
                self._write(subscription, owned, new_blocks, value_writes, orphaned)
            except BaseException:
                subscription.version, subscription._state.adding, pending = before
                subscription.__dict__["_pending_events"] = pending
                for block in new_blocks:
                    object.__setattr__(block, "_instance_id", None)
                    object.__setattr__(block, "_owner_id", None)
                raise

    def _write(self, subscription: Subscription, owned: list[BlockModel], new_blocks: list[BlockModel],
               value_writes: list[tuple[BlockModel, str, str | None]], orphaned: list[uuid.UUID]) -> None:
        """The writes of save(), inside its transaction and after its checks."""
        # The subscription row first: its optimistic version check makes a save from a stale
        # copy fail before any of its blocks is touched. save() validated the blocks (in the new
        # status, if this save changes it) before writing them; the subscription's own check would
        # read them from the rows this save has not yet written.
        pending = list(subscription.__dict__.get("_pending_events", []))
        subscription.save(blocks_validated=True)

        product_blocks = _product_blocks({b.__block_name__ for b in new_blocks})
        root_labels = {id(getattr(self, name)): name for name, spec in self.fields().items()
                       if spec.kind == "block" and getattr(self, name) is not None}
        created = []
        for block in new_blocks:
            created.append(SubscriptionInstance(
                subscription=subscription,
                product_block=product_blocks[block.__block_name__],
                label=block._label or root_labels.get(id(block), ""),
            ))
            object.__setattr__(block, "_instance_id", created[-1].pk)
            object.__setattr__(block, "_owner_id", subscription.pk)
            object.__setattr__(block, "_label", created[-1].label)
        SubscriptionInstance.objects.bulk_create(created)

        desired_relations = set(self._relations())
        stale_relations = self._loaded_relations - desired_relations
        if stale_relations:
            # Relations go before the instances they point at, which are protected while used.
            for parent, attr, order, _child in stale_relations:
                SubscriptionInstanceRelation.objects.filter(
                    in_use_by_id=parent, domain_model_attr=attr, order_id=order
                ).delete()
        if orphaned:
            try:
                SubscriptionInstance.objects.filter(pk__in=orphaned).delete()
            except ProtectedError as exc:  # someone started using it since the check above
                raise _still_used(
                    subscription, {str(r.in_use_by.subscription_id) for r in exc.protected_objects}
                ) from exc
        new_relations = desired_relations - self._loaded_relations
        SubscriptionInstanceRelation.objects.bulk_create(
            SubscriptionInstanceRelation(in_use_by_id=p, domain_model_attr=a, order_id=o, depends_on_id=c)
            for p, a, o, c in sorted(new_relations, key=lambda r: (str(r[0]), r[1], r[2]))
        )
        self._write_values(value_writes)
        if pending:
            # After the relations are written: a status change is checked against the neighbours this
            # save leaves, not the ones it replaces.
            from subscriptions.relations import check_neighbours_allow

            check_neighbours_allow(subscription, from_status=pending[0].from_status,
                                   transition=pending[-1].transition)

        for block in owned:
            object.__setattr__(block, "_loaded", block._scalar_texts())
            object.__setattr__(block, "_loaded_children", block._child_ids())
        object.__setattr__(self, "_loaded_relations", desired_relations)
        object.__setattr__(self, "_loaded_instances", {b._instance_id: b.__block_name__ for b in owned})
        subscription.__dict__["_saved_columns"] = _column_snapshot(subscription)

    def _write_values(self, writes: list[tuple[BlockModel, str, str | None]]) -> None:
        """Write changed values only: insert new ones, update changed ones, delete cleared ones."""
        if not writes:
            return
        names = {name for _, name, _ in writes}
        resource_types = {rt.resource_type: rt for rt in ResourceType.objects.filter(resource_type__in=names)}
        missing = sorted(names - set(resource_types))
        if missing:
            raise DomainModelError(
                f"resource type(s) {', '.join(missing)} do not exist; add them to the product model "
                f"(for the demo products: manage.py load_demo)"
            )
        to_create = []
        for block, name, text in writes:
            # The loaded snapshot says whether a row exists; the subscription's version check has
            # already proven that snapshot current.
            had_row = (block._loaded or {}).get(name) is not None
            rows = SubscriptionInstanceValue.objects.filter(
                subscription_instance_id=block._instance_id, resource_type=resource_types[name]
            )
            if text is None:
                rows.delete()
            elif had_row:
                rows.update(value=text)
            else:
                to_create.append(SubscriptionInstanceValue(
                    subscription_instance_id=block._instance_id, resource_type=resource_types[name], value=text
                ))
        SubscriptionInstanceValue.objects.bulk_create(to_create)

    def _walk(self) -> typing.Iterator[BlockModel]:
        seen: set[int] = set()
        stack = [b for name, spec in self.fields().items()
                 for b in (getattr(self, name) if spec.kind == "list" else [getattr(self, name)]) if b is not None]
        while stack:
            block = stack.pop()
            if id(block) in seen:
                continue
            seen.add(id(block))
            yield block
            # Into blocks of other subscriptions too: save() must see (and refuse) a change to the
            # node of a port a link uses; _relations() skips their links, which are not ours to write.
            stack.extend(child for _, _, child in block._children())

    def _relations(self) -> typing.Iterator[tuple[uuid.UUID, str, int, uuid.UUID]]:
        for block in self._walk():
            if block._owner_id not in (None, self.subscription.pk):
                continue
            for name, position, child in block._children():
                if block._instance_id is not None and child._instance_id is not None:
                    yield block._instance_id, name, position, child._instance_id


def _instance_tree_sql(subscription: Subscription) -> RawSQL:
    instance_table = SubscriptionInstance._meta.db_table
    relation_table = SubscriptionInstanceRelation._meta.db_table
    pk_col = SubscriptionInstance._meta.pk.column
    sub_col = SubscriptionInstance._meta.get_field("subscription").column
    parent_col = SubscriptionInstanceRelation._meta.get_field("in_use_by").column
    child_col = SubscriptionInstanceRelation._meta.get_field("depends_on").column
    param = Subscription._meta.pk.get_db_prep_value(subscription.pk, connection)
    sql = (
        f"WITH RECURSIVE tree(id) AS ("
        f" SELECT {pk_col} FROM {instance_table} WHERE {sub_col} = %s"
        f" UNION SELECT r.{child_col} FROM {relation_table} r JOIN tree t ON r.{parent_col} = t.id"
        f") SELECT id FROM tree"
    )
    return RawSQL(sql, (param,))


def _relation_limits() -> dict[tuple[str, str], tuple[int, int | None]]:
    from subscriptions.models import ProductBlockRelation

    return {
        (parent, child): (low, high)
        for parent, child, low, high in ProductBlockRelation.objects.values_list(
            "in_use_by__name", "depends_on__name", "min", "max"
        )
    }


def _product_blocks(names: set[str]) -> dict[str, ProductBlock]:
    if not names:
        return {}
    found = {pb.name: pb for pb in ProductBlock.objects.filter(name__in=names)}
    missing = sorted(names - set(found))
    if missing:
        raise DomainModelError(
            f"product block(s) {', '.join(missing)} do not exist; add them to the product model "
            f"(for the demo products: manage.py load_demo)"
        )
    return found


def _still_used(subscription: Subscription, users: set[str]) -> DomainModelError:
    return DomainModelError(
        f"cannot remove a block of subscription {subscription.subscription_id}: "
        f"subscription(s) {', '.join(sorted(users))} still use it"
    )


def _column_snapshot(subscription: Subscription) -> dict[str, Any]:
    return {name: getattr(subscription, name) for name in (*EDITABLE_COLUMNS, "status")}


def _columns_changed(subscription: Subscription) -> bool:
    snapshot = subscription.__dict__.get("_saved_columns")
    return snapshot is None or _column_snapshot(subscription) != snapshot
