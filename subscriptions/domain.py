"""Typed domain models: a product's blocks declared once in Python, loaded from and saved to the DB.

A product block is a class with annotated fields::

    class PortBlock(BlockModel, block="PortBlock"):
        port_name: str
        speed: int

    class NodeBlock(BlockModel, block="NodeBlock"):
        node_name: str
        ipv4_loopback: IPv4Address | None
        ports: list[PortBlock]

    class NodeProduct(SubscriptionModel, product_type="Node"):
        node: NodeBlock

A scalar field maps to the resource type of the same name, a block field to a child instance linked by
a SubscriptionInstanceRelation (its `domain_model_attr` is the field name, `order_id` the position in a
list). A field without `| None` is required once the subscription is in a strict lifecycle status
(ORCHESTRATOR["STRICT_LIFECYCLE_STATUSES"], active by default); before that, a create workflow may leave
it empty. Moving a subscription into such a status is checked the same way, whichever path moves it
(check_status_change, called by Subscription.save()). Values are type-checked whatever the status.

`NodeProduct.load(subscription)` costs four queries whatever the number of blocks; `save()` validates
everything first, then writes only the rows that changed, with the subscription's version bump, in one
transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import logging
import types
import typing
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Self

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.db.models.expressions import RawSQL

from orchestrator_site.conf import orchestrator_setting
from subscriptions.errors import DomainModelError
from subscriptions.models import (
    Product,
    ProductBlock,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
)

logger = logging.getLogger(__name__)

_MISSING = object()


# --- scalar types: how each is read from and written to the text column ----------------------------
def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"true", "1", "yes"}:
        return True
    if isinstance(raw, str) and raw.strip().lower() in {"false", "0", "no"}:
        return False
    raise ValueError("not a boolean")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError("not an integer")
    return int(raw)


def _parse_decimal(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw))
    except InvalidOperation as exc:
        raise ValueError("not a decimal number") from exc


def _parse_datetime(raw: Any) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        return raw
    return dt.datetime.fromisoformat(str(raw))


def _parse_date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
        return raw
    return dt.date.fromisoformat(str(raw))


_SCALARS: dict[type, typing.Callable[[Any], Any]] = {
    str: lambda raw: raw if isinstance(raw, str) else _refuse_non_str(raw),
    int: _parse_int,
    bool: _parse_bool,
    Decimal: _parse_decimal,
    uuid.UUID: lambda raw: raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)),
    ipaddress.IPv4Address: lambda raw: ipaddress.IPv4Address(str(raw)),
    ipaddress.IPv6Address: lambda raw: ipaddress.IPv6Address(str(raw)),
    ipaddress.IPv4Network: lambda raw: ipaddress.IPv4Network(str(raw)),
    ipaddress.IPv6Network: lambda raw: ipaddress.IPv6Network(str(raw)),
    ipaddress.IPv4Interface: lambda raw: ipaddress.IPv4Interface(str(raw)),
    ipaddress.IPv6Interface: lambda raw: ipaddress.IPv6Interface(str(raw)),
    dt.date: _parse_date,
    dt.datetime: _parse_datetime,
}


def _refuse_non_str(raw: Any) -> str:
    raise ValueError(f"expected text, got {type(raw).__name__}")


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# --- field declarations --------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """What a domain-model field holds, read from its annotation."""

    name: str
    kind: str  # "scalar", "block" or "list"
    type: type
    optional: bool
    default: Any = _MISSING

    def parse(self, owner: str, raw: Any) -> Any:
        """Convert `raw` to this field's type, or raise an error naming block, field and value."""
        if raw is None:
            return None
        if self.kind != "scalar":
            expected = f"list of {self.type.__name__}" if self.kind == "list" else self.type.__name__
            raise DomainModelError(
                f"{owner}.{self.name}: {raw!r} is not a {expected}",
                errors={f"{owner}.{self.name}": [f"expected {expected}"]},
            )
        try:
            if isinstance(self.type, type) and issubclass(self.type, enum.Enum):
                return raw if isinstance(raw, self.type) else self.type(raw)
            return _SCALARS[self.type](raw)
        except (ValueError, TypeError) as exc:
            raise DomainModelError(
                f"{owner}.{self.name}: {raw!r} is not a valid {self.type.__name__} ({exc})",
                errors={f"{owner}.{self.name}": [f"{raw!r} is not a valid {self.type.__name__}"]},
                block=owner,
                field=self.name,
                value=raw,
            ) from exc


def _field_specs(cls: type) -> dict[str, FieldSpec]:
    specs: dict[str, FieldSpec] = {}
    hints = typing.get_type_hints(cls)
    for name, hint in hints.items():
        if name.startswith("_") or typing.get_origin(hint) is ClassVar or name in _RESERVED:
            continue
        optional = False
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) != 1:
                raise TypeError(f"{cls.__name__}.{name}: only `X | None` unions are supported, not {hint}")
            optional = len(non_none) != len(args)
            hint = non_none[0]
        default = cls.__dict__.get(name, _MISSING)
        if typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            if not (isinstance(item, type) and issubclass(item, BlockModel)):
                raise TypeError(f"{cls.__name__}.{name}: lists must hold product blocks, not {item}")
            specs[name] = FieldSpec(name, "list", item, optional, default)
        elif isinstance(hint, type) and issubclass(hint, BlockModel):
            specs[name] = FieldSpec(name, "block", hint, optional, default)
        elif hint in _SCALARS or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
            specs[name] = FieldSpec(name, "scalar", hint, optional, default)
        else:
            raise TypeError(
                f"{cls.__name__}.{name}: type {hint} is not supported; use a product block, a list of them, "
                f"an Enum, or one of {', '.join(sorted(t.__name__ for t in _SCALARS))}"
            )
    return specs


_RESERVED = {"subscription", "product"}


class BlockModel:
    """A typed product block. Subclass with `block="ProductBlockName"` and annotated fields."""

    __block_name__: ClassVar[str]
    __fields__: ClassVar[dict[str, FieldSpec]]
    _registry: ClassVar[dict[str, type[BlockModel]]] = {}
    # For each lifecycle status of a subscription this block uses (through a block field or a value
    # naming it), the statuses this block's own subscription may be in; a status not listed allows any.
    # None: subscriptions.relations.DEFAULT_USER_STATUSES (only terminated may use terminated).
    USER_STATUSES: ClassVar[dict[str, tuple[str, ...]] | None] = None

    def __init_subclass__(cls, block: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__block_name__ = block or cls.__name__
        cls.__fields__ = {}  # filled lazily: annotations may name blocks declared further down
        BlockModel._registry[cls.__block_name__] = cls

    @classmethod
    def fields(cls) -> dict[str, FieldSpec]:
        if not cls.__fields__:
            cls.__fields__ = _field_specs(cls)
        return cls.__fields__

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_instance_id", None)
        object.__setattr__(self, "_owner_id", None)
        object.__setattr__(self, "_label", values.pop("label", ""))
        object.__setattr__(self, "_loaded", None)
        object.__setattr__(self, "_loaded_children", None)
        unknown = set(values) - set(self.fields())
        if unknown:
            raise DomainModelError(
                f"{self.__block_name__} has no field(s) "
                f"{', '.join(f'{name}={values[name]!r}' for name in sorted(unknown))}; "
                f"its fields are {', '.join(self.fields())}"
            )
        for name, spec in self.fields().items():
            if name in values:
                value = values[name]
            elif spec.kind == "list":
                value = []
            elif spec.default is not _MISSING:
                value = spec.default
            else:
                value = None
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self.fields().get(name)
        if spec is None:
            if name.startswith("_"):
                object.__setattr__(self, name, value)
                return
            raise DomainModelError(
                f"{self.__block_name__} has no field {name!r} (assigned {value!r}); "
                f"its fields are {', '.join(self.fields())}"
            )
        if spec.kind == "scalar":
            value = spec.parse(self.__block_name__, value)
        elif spec.kind == "block" and value is not None and not isinstance(value, spec.type):
            spec.parse(self.__block_name__, value)  # raises, naming block, field and value
        elif spec.kind == "list":
            if not isinstance(value, list) or not all(isinstance(v, spec.type) for v in value):
                spec.parse(self.__block_name__, value)
            value = list(value)
        object.__setattr__(self, name, value)

    @property
    def instance_id(self) -> uuid.UUID | None:
        """The SubscriptionInstance this block is stored in (None until saved)."""
        return self._instance_id

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.fields())
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.fields())

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The block as JSON-ready data (for the API, the admin and process state)."""
        out: dict[str, Any] = {}
        for name, spec in self.fields().items():
            value = getattr(self, name)
            if spec.kind == "list":
                out[name] = [item.to_dict() for item in value]
            elif spec.kind == "block":
                out[name] = value.to_dict() if value is not None else None
            else:
                out[name] = None if value is None else (value if isinstance(value, bool | int) else _to_text(value))
        if self._instance_id is not None:
            out["subscription_instance_id"] = str(self._instance_id)
        return out

    def _scalar_texts(self) -> dict[str, str | None]:
        return {
            name: None if getattr(self, name) is None else _to_text(getattr(self, name))
            for name, spec in self.fields().items()
            if spec.kind == "scalar"
        }

    def _child_ids(self) -> list[tuple[str, int, uuid.UUID | None]]:
        return [(name, position, child._instance_id) for name, position, child in self._children()]

    def _children(self) -> typing.Iterator[tuple[str, int, BlockModel]]:
        for name, spec in self.fields().items():
            value = getattr(self, name)
            if spec.kind == "block" and value is not None:
                yield name, 0, value
            elif spec.kind == "list":
                for position, item in enumerate(value):
                    yield name, position, item


class SubscriptionModel:
    """A subscription seen through its product's typed blocks. Subclass with `product_type="..."`."""

    __product_type__: ClassVar[str]
    __fields__: ClassVar[dict[str, FieldSpec]]
    _registry: ClassVar[dict[str, type[SubscriptionModel]]] = {}

    # The subscription's own columns a workflow may change through the model (status goes through
    # the lifecycle transitions of `model.subscription`, version through save()).
    EDITABLE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "description", "customer_id", "note", "insync", "start_date", "end_date",
    )

    def __init_subclass__(cls, product_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__product_type__ = product_type or cls.__name__
        cls.__fields__ = {}
        SubscriptionModel._registry[cls.__product_type__] = cls

    @classmethod
    def fields(cls) -> dict[str, FieldSpec]:
        if not cls.__fields__:
            specs = _field_specs(cls)
            wrong = [s.name for s in specs.values() if s.kind == "scalar"]
            if wrong:
                raise TypeError(
                    f"{cls.__name__}: a subscription model holds product blocks only; "
                    f"put {', '.join(wrong)} in a block"
                )
            cls.__fields__ = specs
        return cls.__fields__

    @staticmethod
    def model_for(product: Product) -> type[SubscriptionModel]:
        """The domain model class registered for a product's product_type."""
        try:
            return SubscriptionModel._registry[product.product_type]
        except KeyError:
            raise DomainModelError(
                f"no domain model is declared for product type {product.product_type!r} "
                f"(product {product.name}); known types: {', '.join(sorted(SubscriptionModel._registry))}"
            ) from None

    def __init__(self, subscription: Subscription, **blocks: Any) -> None:
        object.__setattr__(self, "subscription", subscription)
        object.__setattr__(self, "_loaded_relations", set())
        object.__setattr__(self, "_loaded_instances", {})
        for name, spec in self.fields().items():
            value = blocks.get(name, [] if spec.kind == "list" else None)
            if value is None and spec.kind == "block" and not spec.optional:
                value = spec.type()  # a new subscription starts with its root blocks, empty
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in SubscriptionModel.EDITABLE_COLUMNS or name in {"status", "version", "subscription_id", "product"}:
            return getattr(self.subscription, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.EDITABLE_COLUMNS:
            setattr(self.subscription, name, value)
            return
        spec = self.fields().get(name)
        if spec is None:
            raise DomainModelError(
                f"{type(self).__name__} has no field {name!r}; status changes through "
                f"subscription transitions, version through save()"
                if name in {"status", "version"}
                else f"{type(self).__name__} has no field {name!r}"
            )
        if spec.kind == "block" and value is not None and not isinstance(value, spec.type):
            spec.parse(type(self).__name__, value)
        if spec.kind == "list" and not (isinstance(value, list) and all(isinstance(v, spec.type) for v in value)):
            spec.parse(type(self).__name__, value)
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.subscription.subscription_id}, {self.subscription.status})"

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def new(cls, product: Product, customer_id: str, description: str, **blocks: Any) -> Self:
        """A new, unsaved subscription of `product` in status initial, with empty root blocks."""
        if product.product_type != cls.__product_type__:
            raise DomainModelError(
                f"{cls.__name__} is for products of type {cls.__product_type__}, "
                f"not {product.name} ({product.product_type})"
            )
        subscription = Subscription(product=product, customer_id=customer_id, description=description)
        return cls(subscription, **blocks)

    @classmethod
    def load(cls, subscription: Subscription | uuid.UUID | str) -> Self:
        """Build the typed model from the instance and value tables, in a constant number of queries."""
        if not isinstance(subscription, Subscription):
            subscription_id = subscription
            try:
                subscription = Subscription.objects.select_related("product").get(pk=subscription_id)
            except (Subscription.DoesNotExist, ValueError, ValidationError) as exc:
                raise DomainModelError(f"subscription {subscription_id} does not exist") from exc
        if cls is SubscriptionModel:
            cls = SubscriptionModel.model_for(subscription.product)  # type: ignore[assignment]
        elif subscription.product.product_type != cls.__product_type__:
            raise DomainModelError(
                f"subscription {subscription.subscription_id} is a {subscription.product.product_type}, "
                f"not a {cls.__product_type__}: load it with its own model"
            )
        model = cls._read(subscription)
        # What save() compares the subscription's columns against to tell whether they changed.
        subscription.__dict__["_saved_columns"] = _column_snapshot(subscription)
        return model

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

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check required fields (in strict statuses) and cardinalities; raise one error listing all."""
        status = self.subscription.status
        strict = status in set(orchestrator_setting("STRICT_LIFECYCLE_STATUSES"))
        limits = _relation_limits()
        errors: dict[str, list[str]] = {}

        def check_field(owner: str | None, spec: FieldSpec, value: Any, where: str) -> None:
            if spec.kind == "list":
                strays = [type(v).__name__ for v in value if not isinstance(v, spec.type)]
                if strays:
                    errors.setdefault(where, []).append(
                        f"holds {', '.join(strays)} where only {spec.type.__name__} belongs"
                    )
                # A list's bounds come from the product model (ProductBlockRelation min/max); a root
                # list without one needs at least one block unless it is declared optional.
                default_low = 0 if spec.optional or owner is not None else 1
                low, high = limits.get((owner, spec.type.__block_name__), (default_low, None))
                if high is not None and len(value) > high:
                    errors.setdefault(where, []).append(f"at most {high} allowed, got {len(value)}")
                if strict and len(value) < low:
                    errors.setdefault(where, []).append(
                        f"at least {low} required while the subscription is {status}, got {len(value)}"
                    )
            elif strict and value is None and not spec.optional:
                errors.setdefault(where, []).append(f"required while the subscription is {status} (value: {value!r})")

        seen: set[int] = set()

        def check_block(block: BlockModel, path: str) -> None:
            if id(block) in seen:
                return
            seen.add(id(block))
            for name, spec in block.fields().items():
                check_field(block.__block_name__, spec, getattr(block, name), f"{path}.{name}")
            for name, position, child in block._children():
                suffix = f"[{position}]" if block.fields()[name].kind == "list" else ""
                check_block(child, f"{path}.{name}{suffix}")

        for name, spec in self.fields().items():
            value = getattr(self, name)
            check_field(None, spec, value, name)
            for position, block in enumerate(value if spec.kind == "list" else [value]):
                if block is not None:
                    check_block(block, f"{name}[{position}]" if spec.kind == "list" else name)
        if errors:
            raise DomainModelError(
                f"subscription {self.subscription.subscription_id} ({type(self).__name__}) is invalid: "
                f"{_summary(errors)}",
                errors=errors,
                subscription_id=self.subscription.subscription_id,
                status=status,
            )

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

    def to_dict(self) -> dict[str, Any]:
        """The subscription's blocks as JSON-ready data."""
        out: dict[str, Any] = {}
        for name, spec in self.fields().items():
            value = getattr(self, name)
            if spec.kind == "list":
                out[name] = [b.to_dict() for b in value]
            else:
                out[name] = value.to_dict() if value is not None else None
        return out


def check_status_change(subscription: Subscription, from_status: str) -> None:
    """Refuse a move into a strict lifecycle status while the stored domain model is invalid there.

    Subscription.save() calls this for every save that records a transition, inside its transaction
    and after its optimistic version check: `subscription` already has its new status, and the blocks
    read here are the ones it will hold in it (a writer of blocks must first write the subscription's
    row, which this transaction now has locked). SubscriptionModel.save() does not come through here:
    it validated the blocks it is about to write, while the rows read here would still be the old ones.
    """
    status = subscription.status
    if status not in set(orchestrator_setting("STRICT_LIFECYCLE_STATUSES")):
        return
    model_class = SubscriptionModel._registry.get(subscription.product.product_type)
    if model_class is None:
        # A product without a registered domain model class declares no fields, so none can be
        # required: it is not validated (as its subscriptions are not, by anything else).
        return
    model = model_class._read(subscription)
    try:
        model.validate()
    except DomainModelError as exc:
        raise DomainModelError(
            f"cannot move subscription {subscription.subscription_id} from {from_status} to {status}: "
            f"its {model_class.__name__} is not valid while {status}: {_summary(exc.errors)}",
            errors=exc.errors,
            subscription_id=subscription.subscription_id,
            status=from_status,
            target=status,
        ) from None


def _summary(errors: dict[str, list[str]]) -> str:
    """Field errors as one line: `node.node_name: required ... (value: None); node.node_role: ...`."""
    return "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())


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
    return {name: getattr(subscription, name) for name in (*SubscriptionModel.EDITABLE_COLUMNS, "status")}


def _columns_changed(subscription: Subscription) -> bool:
    snapshot = subscription.__dict__.get("_saved_columns")
    return snapshot is None or _column_snapshot(subscription) != snapshot
