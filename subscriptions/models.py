"""The product model (products, blocks, resource types) and subscriptions with their lifecycle."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import models, transaction
from django.utils import timezone
from django_fsm import FSMModelMixin, transition

from subscriptions.errors import IllegalTransition, StaleSubscription
from subscriptions.indexes import TrigramIndex
from subscriptions.lifecycle import LifecycleField, SubscriptionLifecycle, actor_name

logger = logging.getLogger(__name__)


class ProductLifecycle(models.TextChoices):
    """Where a product (or product block) is in its own life: may it still be sold?"""

    ACTIVE = "active", "active"
    PRE_PRODUCTION = "pre production", "pre production"
    PHASE_OUT = "phase out", "phase out"
    END_OF_LIFE = "end of life", "end of life"


class ResourceType(models.Model):
    """A kind of value a product block carries (a node name, a loopback address, a port speed)."""

    resource_type = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Its values are ids of other subscriptions (a link's far end, a service's access port): the
    # subscription holding such a value uses the one it names, as it would through a block relation.
    references_subscription = models.BooleanField(
        default=False,
        help_text="Values of this type are ids of other subscriptions, which the holder then uses.",
    )

    class Meta:
        ordering = ["resource_type"]

    def __str__(self) -> str:
        return self.resource_type


class ProductBlock(models.Model):
    """A reusable building block of products, carrying resource types and depending on other blocks."""

    product_block_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    tag = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=20, choices=ProductLifecycle.choices, default=ProductLifecycle.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    end_date = models.DateTimeField(null=True, blank=True)
    resource_types = models.ManyToManyField(ResourceType, related_name="product_blocks", blank=True)
    depends_on = models.ManyToManyField(
        "self",
        through="ProductBlockRelation",
        through_fields=("in_use_by", "depends_on"),
        symmetrical=False,
        related_name="in_use_by",
        blank=True,
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProductBlockRelation(models.Model):
    """Block `in_use_by` contains between min and max instances of block `depends_on`."""

    in_use_by = models.ForeignKey(ProductBlock, on_delete=models.CASCADE, related_name="depends_on_relations")
    depends_on = models.ForeignKey(ProductBlock, on_delete=models.PROTECT, related_name="in_use_by_relations")
    min = models.PositiveIntegerField(default=0)
    max = models.PositiveIntegerField(null=True, blank=True, help_text="Empty means no upper limit.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["in_use_by", "depends_on"], name="unique_product_block_relation"),
            models.CheckConstraint(
                condition=models.Q(max__isnull=True) | models.Q(max__gte=models.F("min")),
                name="product_block_relation_max_gte_min",
            ),
        ]

    def __str__(self) -> str:
        upper = "*" if self.max is None else self.max
        return f"{self.in_use_by} → {self.depends_on} [{self.min}..{upper}]"


class Product(models.Model):
    """Something a provider sells (a node, a port, a link); each sale is a Subscription."""

    product_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    product_type = models.CharField(max_length=100, db_index=True)
    tag = models.CharField(max_length=50, db_index=True)
    status = models.CharField(max_length=20, choices=ProductLifecycle.choices, default=ProductLifecycle.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    end_date = models.DateTimeField(null=True, blank=True)
    product_blocks = models.ManyToManyField(ProductBlock, related_name="products", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FixedInput(models.Model):
    """A value fixed by the product itself (for example a port's speed), not chosen per subscription."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="fixed_inputs")
    name = models.CharField(max_length=100)
    value = models.CharField(max_length=200)

    class Meta:
        ordering = ["product", "name"]
        constraints = [models.UniqueConstraint(fields=["product", "name"], name="unique_fixed_input_per_product")]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class Subscription(FSMModelMixin, models.Model):
    """A customer's instance of a product, moved through its lifecycle only by transitions.

    `status` is protected: it changes only through the transition methods below, each of which records a
    SubscriptionLifecycleEvent when the subscription is saved. `version` increases on every save, and a
    save from a stale copy (someone else saved in between) raises StaleSubscription instead of silently
    overwriting their change.
    """

    subscription_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    description = models.TextField()
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="subscriptions")
    customer_id = models.CharField(max_length=100, db_index=True)
    status = LifecycleField(
        max_length=20, choices=SubscriptionLifecycle.choices, default=SubscriptionLifecycle.INITIAL,
        protected=True, db_index=True,
    )
    insync = models.BooleanField(default=False, db_index=True)
    start_date = models.DateTimeField(null=True, blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=0, editable=False)
    # When insync last went false (kept by save()); empty while in sync.
    out_of_sync_since = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-start_date", "subscription_id"]
        indexes = [
            models.Index(fields=["product", "status"], name="subscription_product_status"),
            # For search (subscriptions.search): substrings of these, on PostgreSQL.
            TrigramIndex(fields=["description"], name="subscription_description_trgm"),
            TrigramIndex(fields=["customer_id"], name="subscription_customer_trgm"),
        ]

    def __str__(self) -> str:
        return f"{self.description} ({self.short_id})"

    # --- persistence ---------------------------------------------------------------------------
    def save(self, *args: Any, blocks_validated: bool = False, **kwargs: Any) -> None:
        """Save with optimistic locking, writing the pending lifecycle events in the same transaction.

        A save that moves the subscription into a strict lifecycle status (active, by default) is
        refused with a DomainModelError, naming each block field that is wrong, unless its typed domain
        model is valid in that status: every path into such a status (a transition and save,
        change_lifecycle, a workflow's set_active step) comes through here. `blocks_validated` is for
        SubscriptionModel.save() alone, which has validated the blocks it writes after this row.
        """
        with transaction.atomic():
            expected, adding = self.version, self._state.adding
            self.version = expected + 1
            self._expected_version = None if adding else expected
            before_since = self.out_of_sync_since
            if self.insync:
                self.out_of_sync_since = None
            elif self.out_of_sync_since is None:
                self.out_of_sync_since = timezone.now()
            update_fields = kwargs.get("update_fields")
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "version", "out_of_sync_since"}
            pending = self.__dict__.get("_pending_events", [])
            try:
                super().save(*args, **kwargs)
                if pending and not blocks_validated:
                    # After the write: the row is now locked and proven current, so the blocks read
                    # for the check are the ones the new status will hold. A refusal rolls it back.
                    from subscriptions.domain import check_status_change  # domain builds on this module

                    check_status_change(self, from_status=pending[0].from_status)
                if pending and not blocks_validated:
                    # Whichever path changes the status: a workflow that forgets to check must not
                    # leave a port on a terminated node either. (SubscriptionModel.save() checks after
                    # it has written its relations, which may be what changes the neighbourhood.)
                    from subscriptions.relations import check_neighbours_allow

                    check_neighbours_allow(self, from_status=pending[0].from_status,
                                           transition=pending[-1].transition)
                if pending:
                    SubscriptionLifecycleEvent.objects.bulk_create(pending)
            except BaseException:
                # The transaction rolls back; so does this copy, and it keeps its pending events.
                self.version, self._state.adding, self.out_of_sync_since = expected, adding, before_since
                raise
            self.__dict__.pop("_pending_events", None)
            for event in pending:
                logger.info(
                    "subscription %s: %s (%s → %s) by %s%s",
                    self.subscription_id, event.transition, event.from_status, event.to_status,
                    event.changed_by, f" in process {event.process_id}" if event.process_id else "",
                )

    def _do_update(self, base_qs: Any, using: Any, pk_val: Any, values: Any, update_fields: Any,
                   forced_update: Any, returning_fields: Any = None) -> Any:
        # Optimistic lock: the UPDATE only matches the row if nobody saved it since we read it.
        expected = getattr(self, "_expected_version", None)
        filtered = base_qs if expected is None else base_qs.filter(version=expected)
        updated = super()._do_update(filtered, using, pk_val, values, update_fields, forced_update,
                                     returning_fields)
        if not updated and expected is not None and base_qs.filter(pk=pk_val).exists():
            current = base_qs.filter(pk=pk_val).values_list("version", flat=True).first()
            raise StaleSubscription(
                f"subscription {self.subscription_id} was changed by someone else since it was read "
                f"(read at version {expected}, now at version {current}); reload it and try again",
                subscription_id=self.subscription_id,
            )
        return updated

    @property
    def short_id(self) -> str:
        return str(self.subscription_id)[:8] + "…"

    # --- lifecycle transitions -----------------------------------------------------------------
    # Each takes who made the change (a user, a name, or None for the system) and, when a workflow
    # made it, the id of its process; the event is written by save(), in the same transaction.
    @transition(field=status, source=SubscriptionLifecycle.INITIAL, target=SubscriptionLifecycle.PROVISIONING)
    def provision(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        self._record("provision", SubscriptionLifecycle.INITIAL, SubscriptionLifecycle.PROVISIONING, by, process_id)

    @transition(field=status, source=SubscriptionLifecycle.PROVISIONING, target=SubscriptionLifecycle.ACTIVE)
    def activate(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        if self.start_date is None:
            self.start_date = timezone.now()
        self._record("activate", SubscriptionLifecycle.PROVISIONING, SubscriptionLifecycle.ACTIVE, by, process_id)

    @transition(field=status, source=SubscriptionLifecycle.ACTIVE, target=SubscriptionLifecycle.DISABLED)
    def disable(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        self._record("disable", SubscriptionLifecycle.ACTIVE, SubscriptionLifecycle.DISABLED, by, process_id)

    @transition(field=status, source=SubscriptionLifecycle.DISABLED, target=SubscriptionLifecycle.ACTIVE)
    def enable(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        self._record("enable", SubscriptionLifecycle.DISABLED, SubscriptionLifecycle.ACTIVE, by, process_id)

    @transition(field=status, source=SubscriptionLifecycle.ACTIVE, target=SubscriptionLifecycle.MIGRATING)
    def start_migration(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        self._record(
            "start_migration", SubscriptionLifecycle.ACTIVE, SubscriptionLifecycle.MIGRATING, by, process_id
        )

    @transition(field=status, source=SubscriptionLifecycle.MIGRATING, target=SubscriptionLifecycle.ACTIVE)
    def finish_migration(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        self._record(
            "finish_migration", SubscriptionLifecycle.MIGRATING, SubscriptionLifecycle.ACTIVE, by, process_id
        )

    @transition(
        field=status,
        source=[
            SubscriptionLifecycle.INITIAL,
            SubscriptionLifecycle.PROVISIONING,
            SubscriptionLifecycle.ACTIVE,
            SubscriptionLifecycle.DISABLED,
        ],
        target=SubscriptionLifecycle.TERMINATED,
    )
    def terminate(self, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        # An end date already agreed (a contract's end, set before the termination ran) is kept.
        if self.end_date is None:
            self.end_date = timezone.now()
        self._record("terminate", self.status, SubscriptionLifecycle.TERMINATED, by, process_id)

    def transition_to(self, target: str, by: Any = None, process_id: uuid.UUID | None = None) -> None:
        """Move to `target` through the one transition that leads there from the current status.

        For workflows that say where a subscription should end up (set_status) rather than how.
        """
        for candidate in self.get_available_status_transitions():  # type: ignore[attr-defined]
            if candidate.target == target:
                getattr(self, candidate.name)(by=by, process_id=process_id)
                return
        allowed = sorted({t.target for t in self.get_available_status_transitions()})  # type: ignore[attr-defined]
        raise IllegalTransition(
            f"cannot move subscription {self.subscription_id} from {self.status} to {target}: "
            f"from {self.status} it can only move to {', '.join(allowed) or 'nothing (final status)'}",
            subscription_id=self.subscription_id,
            status=self.status,
            transition=f"to {target}",
        )

    def _record(self, name: str, source: str, target: str, by: Any, process_id: uuid.UUID | None) -> None:
        pending = self.__dict__.setdefault("_pending_events", [])
        pending.append(
            SubscriptionLifecycleEvent(
                subscription=self,
                transition=name,
                from_status=source,
                to_status=target,
                changed_by=actor_name(by),
                process_id=process_id,
            )
        )


class SubscriptionLifecycleEvent(models.Model):
    """One lifecycle transition of a subscription: from, to, when, by whom, and in which process."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="lifecycle_events")
    transition = models.CharField(max_length=50)
    from_status = models.CharField(max_length=20, choices=SubscriptionLifecycle.choices)
    to_status = models.CharField(max_length=20, choices=SubscriptionLifecycle.choices)
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    changed_by = models.CharField(max_length=150)
    # The process that made the change. No foreign key: subscriptions know nothing of processes, which
    # link to subscriptions from their side (DESIGN.md, "Apps and what each owns").
    process_id = models.UUIDField(null=True, blank=True, db_index=True)
    # Why, for a change staff made by hand (setting a stuck subscription in sync); empty for transitions.
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.transition}: {self.from_status} → {self.to_status}"


class SubscriptionInstance(models.Model):
    """A product block instantiated for one subscription."""

    subscription_instance_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="instances")
    product_block = models.ForeignKey(ProductBlock, on_delete=models.PROTECT, related_name="instances")
    label = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["subscription", "product_block__name", "label"]

    def __str__(self) -> str:
        return f"{self.product_block.name} {self.label}".strip()


class SubscriptionInstanceValue(models.Model):
    """An instance's value for one resource type, stored as text and typed by the domain model."""

    subscription_instance = models.ForeignKey(SubscriptionInstance, on_delete=models.CASCADE, related_name="values")
    resource_type = models.ForeignKey(ResourceType, on_delete=models.PROTECT, related_name="values")
    value = models.TextField()

    class Meta:
        ordering = ["resource_type__resource_type"]
        # For search (subscriptions.search): a node name, an address, any value, on PostgreSQL.
        indexes = [TrigramIndex(fields=["value"], name="instance_value_trgm")]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription_instance", "resource_type"], name="unique_value_per_instance_resource_type"
            )
        ]

    def __str__(self) -> str:
        return f"{self.resource_type.resource_type}={self.value}"


class SubscriptionInstanceRelation(models.Model):
    """Instance `in_use_by` uses instance `depends_on` as the `order_id`-th item of its field `domain_model_attr`."""

    in_use_by = models.ForeignKey(SubscriptionInstance, on_delete=models.CASCADE, related_name="depends_on_relations")
    depends_on = models.ForeignKey(SubscriptionInstance, on_delete=models.PROTECT, related_name="in_use_by_relations")
    domain_model_attr = models.CharField(max_length=100)
    order_id = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["in_use_by", "domain_model_attr", "order_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["in_use_by", "domain_model_attr", "order_id"], name="unique_instance_relation_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.in_use_by} .{self.domain_model_attr}[{self.order_id}] → {self.depends_on}"


__all__ = [
    "FixedInput",
    "Product",
    "ProductBlock",
    "ProductBlockRelation",
    "ProductLifecycle",
    "ResourceType",
    "Subscription",
    "SubscriptionInstance",
    "SubscriptionInstanceRelation",
    "SubscriptionInstanceValue",
    "SubscriptionLifecycle",
    "SubscriptionLifecycleEvent",
]

# Kept in a module of their own (they are about API access, not products); imported so Django finds them.
from subscriptions.access_models import BadTokenAttempts  # noqa: E402, F401
