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
transaction. The scalar types live in domain_fields.py, reading and writing the tables in domain_store.py.
"""

from __future__ import annotations

import enum
import logging
import types
import typing
import uuid
from typing import Any, ClassVar, Self

from django.core.exceptions import ValidationError

from orchestrator_site.conf import orchestrator_setting
from subscriptions.domain_fields import _MISSING, _SCALARS, FieldSpec, _to_text
from subscriptions.domain_store import (  # noqa: F401  (_instance_tree_sql: also for the admin's block tree)
    EDITABLE_COLUMNS,
    StoredModel,
    _column_snapshot,
    _instance_tree_sql,
    _relation_limits,
)
from subscriptions.errors import DomainModelError
from subscriptions.models import Product, Subscription

logger = logging.getLogger(__name__)

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


class SubscriptionModel(StoredModel):
    """A subscription seen through its product's typed blocks. Subclass with `product_type="..."`."""

    __product_type__: ClassVar[str]
    __fields__: ClassVar[dict[str, FieldSpec]]
    _registry: ClassVar[dict[str, type[SubscriptionModel]]] = {}

    # The subscription's own columns a workflow may change through the model (status goes through
    # the lifecycle transitions of `model.subscription`, version through save()).
    EDITABLE_COLUMNS: ClassVar[tuple[str, ...]] = EDITABLE_COLUMNS

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

