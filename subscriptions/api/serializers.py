"""Read-only representations of products and subscriptions for the REST API."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from subscriptions.domain import SubscriptionModel
from subscriptions.errors import DomainModelError
from subscriptions.models import (
    FixedInput,
    Product,
    ProductBlock,
    ProductBlockRelation,
    ResourceType,
    Subscription,
    SubscriptionLifecycleEvent,
)

logger = logging.getLogger(__name__)


# --- products ------------------------------------------------------------------------------------
class ProductSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="product_id", read_only=True)

    class Meta:
        model = Product
        fields = ["id", "name", "description", "product_type", "tag", "status", "created_at", "end_date"]
        read_only_fields = fields


class FixedInputSerializer(serializers.ModelSerializer):
    class Meta:
        model = FixedInput
        fields = ["name", "value"]
        read_only_fields = fields


class ResourceTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = ResourceType
        fields = ["resource_type", "description"]
        read_only_fields = fields


class ProductBlockDependencySerializer(serializers.ModelSerializer):
    """A block this block holds, with how many instances of it (max null: no upper limit)."""

    id = serializers.UUIDField(source="depends_on.product_block_id", read_only=True)
    name = serializers.CharField(source="depends_on.name", read_only=True)

    class Meta:
        model = ProductBlockRelation
        fields = ["id", "name", "min", "max"]
        read_only_fields = fields


class ProductBlockSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="product_block_id", read_only=True)
    resource_types = ResourceTypeSerializer(many=True, read_only=True)
    depends_on = ProductBlockDependencySerializer(source="depends_on_relations", many=True, read_only=True)

    class Meta:
        model = ProductBlock
        fields = ["id", "name", "description", "tag", "status", "resource_types", "depends_on"]
        read_only_fields = fields


class ProductWorkflowSerializer(serializers.Serializer):
    """A workflow that serves the product. A plain serializer: subscriptions do not import workflows."""

    name = serializers.CharField(read_only=True)
    target = serializers.CharField(read_only=True, help_text="create, modify, terminate, validate or system")
    description = serializers.CharField(read_only=True)


class ProductDetailSerializer(ProductSerializer):
    fixed_inputs = FixedInputSerializer(many=True, read_only=True)
    product_blocks = ProductBlockSerializer(many=True, read_only=True)
    workflows = ProductWorkflowSerializer(
        source="active_workflows", many=True, read_only=True,
        help_text="The workflows that serve this product (not those removed from the code).",
    )

    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "fixed_inputs", "product_blocks", "workflows"]
        read_only_fields = fields


# --- subscriptions -------------------------------------------------------------------------------
class ProductRefSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="product_id", read_only=True)

    class Meta:
        model = Product
        fields = ["id", "name"]
        read_only_fields = fields


class SubscriptionSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="subscription_id", read_only=True)
    product = ProductRefSerializer(read_only=True)

    class Meta:
        model = Subscription
        fields = [
            "id", "description", "product", "customer_id", "status", "insync", "start_date", "end_date", "note",
            "version",
        ]
        read_only_fields = fields


class LifecycleEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubscriptionLifecycleEvent
        fields = ["transition", "from_status", "to_status", "changed_at", "changed_by", "process_id"]
        read_only_fields = fields


class SubscriptionProcessSerializer(serializers.Serializer):
    """A process on the subscription, read through its ProcessSubscription link (no import of processes)."""

    process_id = serializers.UUIDField(source="process.process_id", read_only=True)
    workflow = serializers.CharField(source="process.workflow.name", read_only=True)
    status = serializers.CharField(source="process.status", read_only=True)
    started_at = serializers.DateTimeField(source="process.started_at", read_only=True)
    last_step = serializers.CharField(source="process.last_step", read_only=True)


DOMAIN_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "nullable": True,
    "description": (
        "The subscription's typed domain model: its product blocks and their values, as nested objects. "
        "Null when no domain model is declared for the product type, or when it cannot be read (see "
        "domain_model_error)."
    ),
}


class SubscriptionDetailSerializer(SubscriptionSerializer):
    domain_model = serializers.SerializerMethodField()
    domain_model_error = serializers.SerializerMethodField()
    lifecycle_history = LifecycleEventSerializer(source="lifecycle_events", many=True, read_only=True)
    processes = SubscriptionProcessSerializer(source="process_links", many=True, read_only=True)

    class Meta(SubscriptionSerializer.Meta):
        fields = [
            *SubscriptionSerializer.Meta.fields, "domain_model", "domain_model_error", "lifecycle_history",
            "processes",
        ]
        read_only_fields = fields

    def _domain_model(self, subscription: Subscription) -> tuple[dict[str, Any] | None, str | None]:
        # Loaded once per object and shared by the two fields that show it.
        cache = self.context.setdefault("_domain_models", {})
        if subscription.pk not in cache:
            cache[subscription.pk] = load_domain_model(subscription)
        return cache[subscription.pk]

    @extend_schema_field(DOMAIN_MODEL_SCHEMA)
    def get_domain_model(self, subscription: Subscription) -> dict[str, Any] | None:
        return self._domain_model(subscription)[0]

    @extend_schema_field(
        {
            "type": "string",
            "nullable": True,
            "description": "Why the domain model could not be read (stored values that do not fit it), or null.",
        }
    )
    def get_domain_model_error(self, subscription: Subscription) -> str | None:
        return self._domain_model(subscription)[1]


def load_domain_model(subscription: Subscription) -> tuple[dict[str, Any] | None, str | None]:
    """The subscription's typed model as a dict and None, or (None, why it could not be loaded).

    A product type without a domain model is normal (null, no error). Stored values that no longer fit
    the model are reported, not raised: the detail page is where someone goes to find out what is wrong.
    """
    try:
        model_class = SubscriptionModel.model_for(subscription.product)
    except DomainModelError:
        return None, None
    try:
        return model_class.load(subscription).to_dict(), None
    except DomainModelError as exc:
        logger.warning("subscription %s: domain model cannot be loaded: %s", subscription.subscription_id, exc)
        return None, str(exc)


class RelatedSubscriptionSerializer(serializers.Serializer):
    subscription_id = serializers.UUIDField()
    description = serializers.CharField()
    product = serializers.CharField()
    status = serializers.CharField()
    insync = serializers.BooleanField()
    via = serializers.CharField(help_text="The block field or resource value that makes the relation "
                                          "(PortBlock.node).")


class SubscriptionRelationsSerializer(serializers.Serializer):
    depends_on = RelatedSubscriptionSerializer(many=True, help_text="The subscriptions this one uses.")
    in_use_by = RelatedSubscriptionSerializer(many=True, help_text="The subscriptions that use this one.")
