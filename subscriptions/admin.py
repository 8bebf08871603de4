"""The Django admin for products, product blocks, resource types and subscriptions."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from subscriptions.access_models import BadTokenAttempts
from subscriptions.blocktree import block_tree
from subscriptions.models import (
    FixedInput,
    Product,
    ProductBlock,
    ProductBlockRelation,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
    SubscriptionLifecycleEvent,
)
from subscriptions.relations import Relation, depends_on, in_use_by
from subscriptions.search import search_subscriptions

logger = logging.getLogger(__name__)


def relation_links(relations: list[Relation], empty: str) -> SafeString | str:
    """The subscriptions at the other end of `relations`, each a link with its status and through what."""
    if not relations:
        return empty
    rows = (
        (
            reverse("admin:subscriptions_subscription_change", args=[r.other.subscription_id]),
            r.other.product, str(r.other.subscription_id)[:8] + "…", r.other.description, r.other.status,
            "" if r.other.insync else ", out of sync", r.via,
        )
        for r in relations
    )
    return format_html(
        '<ul class="subscription-relations">{}</ul>',
        format_html_join("", '<li><a href="{}">{} {}</a> {} ({}{}) <span class="help">via {}</span></li>', rows),
    )


# --- The product model ---------------------------------------------------------------------------
class FixedInputInline(admin.TabularInline):
    model = FixedInput
    extra = 0


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "product_type", "tag", "status", "created_at", "end_date"]
    list_filter = ["status", "product_type", "tag"]
    search_fields = ["name", "description", "tag"]
    filter_horizontal = ["product_blocks"]
    readonly_fields = ["product_id", "created_at"]
    inlines = [FixedInputInline]


@admin.register(FixedInput)
class FixedInputAdmin(admin.ModelAdmin):
    list_display = ["name", "value", "product"]
    list_filter = ["product"]
    list_select_related = ["product"]
    search_fields = ["name", "value", "product__name"]


class ProductBlockRelationInline(admin.TabularInline):
    """The blocks this block depends on, with how many instances of each it holds."""

    model = ProductBlockRelation
    fk_name = "in_use_by"
    extra = 0
    verbose_name = "depends on"
    verbose_name_plural = "depends on (with min and max instances)"


@admin.register(ProductBlock)
class ProductBlockAdmin(admin.ModelAdmin):
    list_display = ["name", "tag", "status", "created_at", "end_date"]
    list_filter = ["status", "tag"]
    search_fields = ["name", "description", "tag"]
    filter_horizontal = ["resource_types"]
    readonly_fields = ["product_block_id", "created_at"]
    inlines = [ProductBlockRelationInline]


@admin.register(ResourceType)
class ResourceTypeAdmin(admin.ModelAdmin):
    list_display = ["resource_type", "description"]
    search_fields = ["resource_type", "description"]


# --- Subscriptions -------------------------------------------------------------------------------
class CustomerFilter(admin.SimpleListFilter):
    """Filter by customer id, listing the first customers in order (search finds any other one)."""

    title = "customer"
    parameter_name = "customer_id"
    max_choices = 100

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        customers = list(
            model_admin.get_queryset(request)
            .order_by("customer_id")
            .values_list("customer_id", flat=True)
            .distinct()[: self.max_choices]
        )
        selected = self.value()
        if selected is not None and selected not in customers:
            customers.append(selected)
        return [(customer, customer) for customer in customers]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() is None:
            return queryset
        return queryset.filter(customer_id=self.value())


class ReadOnlyAdminMixin:
    """For audit records: shown to staff, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SubscriptionLifecycleEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The subscription's lifecycle history, oldest first; written only by transitions."""

    model = SubscriptionLifecycleEvent
    fields = ["transition", "from_status", "to_status", "changed_at", "changed_by", "process_id", "reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "lifecycle event"
    verbose_name_plural = "lifecycle history"



@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "description", "short_id", "product", "customer_id", "status", "insync", "start_date", "version",
    ]
    list_filter = ["status", "insync", "product", CustomerFilter]
    list_select_related = ["product"]
    # Shows the search box; the search itself is subscriptions.search (get_search_results).
    search_fields = ["description", "customer_id"]
    search_help_text = (
        "Words (each must match) of the description, customer id, any resource value (a node name), product "
        "name or type; or a subscription id, whole or its first 8+ characters."
    )
    # status moves only through lifecycle transitions (a protected FSM field: assigning it raises),
    # insync only through workflows, version on every save; product changes are a migration's job.
    # And the rest too: a subscription's data changes only through workflows (its details through
    # modify_subscription_details, its note through modify_note), which take the subscription out of sync
    # while they work on it and record who changed what. The page shows everything, and saves nothing.
    readonly_fields = [
        "description", "customer_id", "note", "subscription_id", "product", "status", "insync", "version",
        "start_date", "end_date", "out_of_sync_since", "product_blocks", "uses", "used_by",
    ]
    fieldsets = [
        (None, {"fields": ["description", "customer_id", "note"]}),
        ("Product and lifecycle", {
            "fields": ["subscription_id", "product", "status", "insync", "out_of_sync_since", "version",
                       "start_date", "end_date"],
        }),
        ("Product blocks", {"fields": ["product_blocks"]}),
        ("Relations", {"fields": ["uses", "used_by"]}),
    ]
    inlines = [SubscriptionLifecycleEventInline]

    @admin.display(description="id", ordering="subscription_id")
    def short_id(self, obj: Subscription) -> str:
        return obj.short_id

    @admin.display(description="product blocks")
    def product_blocks(self, obj: Subscription | None) -> SafeString | str:
        """The subscription's block tree: values, nested blocks, and who owns a block it uses. Three queries."""
        if obj is None or obj.pk is None:
            return "—"
        roots = block_tree(obj)
        if not roots:
            return "This subscription has no product blocks."
        return render_to_string("admin/subscriptions/subscription/_block_tree.html", {"nodes": roots})

    @admin.display(description="uses")
    def uses(self, obj: Subscription | None) -> SafeString | str:
        """The subscriptions this one uses (a port's node), with their status."""
        if obj is None or obj.pk is None:
            return "—"
        return relation_links(depends_on([obj.pk])[obj.pk], "It uses no other subscription.")

    @admin.display(description="used by")
    def used_by(self, obj: Subscription | None) -> SafeString | str:
        """The subscriptions that use this one (a node's ports), with their status."""
        if obj is None or obj.pk is None:
            return "—"
        return relation_links(in_use_by([obj.pk])[obj.pk], "No other subscription uses it.")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """The one subscription search (subscriptions.search), as the API's `?search=`; it lists each row once."""
        return search_subscriptions(queryset, search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """No: a subscription is created by a create workflow, which provisions it and records who did."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No: its data changes only through workflows (see readonly_fields); a POST to its page is a 403."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No: a subscription is ended by a terminate workflow and kept, with its history, for audit."""
        return False


@admin.register(SubscriptionLifecycleEvent)
class SubscriptionLifecycleEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit log of lifecycle transitions: read-only, written only by the transitions themselves."""

    list_display = [
        "changed_at", "subscription", "transition", "from_status", "to_status", "changed_by", "process_id",
    ]
    list_filter = ["transition", "to_status"]
    list_select_related = ["subscription"]
    search_fields = ["changed_by", "transition", "subscription__description", "subscription__customer_id"]
    date_hierarchy = "changed_at"



# A subscription's parts are its domain model, written only by workflows (SubscriptionModel.save() checks
# the values' types and the blocks' cardinalities, and bumps the subscription's version): shown, never
# edited by hand, so nothing can be typed into an active subscription or under a workflow that holds it.
class SubscriptionInstanceValueInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SubscriptionInstanceValue
    extra = 0


@admin.register(SubscriptionInstance)
class SubscriptionInstanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "product_block", "label", "subscription"]
    list_filter = ["product_block"]
    list_select_related = ["product_block", "subscription"]
    search_fields = ["label", "product_block__name", "subscription__description", "subscription__customer_id"]
    autocomplete_fields = ["subscription"]
    readonly_fields = ["subscription_instance_id"]
    inlines = [SubscriptionInstanceValueInline]


@admin.register(SubscriptionInstanceValue)
class SubscriptionInstanceValueAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["subscription_instance", "resource_type", "value"]
    list_filter = ["resource_type"]
    list_select_related = ["subscription_instance__product_block", "resource_type"]
    search_fields = ["value", "resource_type__resource_type", "subscription_instance__label"]
    autocomplete_fields = ["subscription_instance"]


@admin.register(SubscriptionInstanceRelation)
class SubscriptionInstanceRelationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # The relation is a field of the domain model of the instance that uses the other one.
    list_display = ["in_use_by", "domain_model_attr", "order_id", "depends_on"]
    list_select_related = ["in_use_by__product_block", "depends_on__product_block"]
    search_fields = ["domain_model_attr", "in_use_by__label", "depends_on__label"]
    autocomplete_fields = ["in_use_by", "depends_on"]


@admin.register(BadTokenAttempts)
class BadTokenAttemptsAdmin(admin.ModelAdmin):
    """The API's bad-token throttle per client address: seen by staff; deleting a row lifts its block at once."""

    list_display = ("address", "failures", "window_started", "blocked_until")
    search_fields = ("address",)
    ordering = ("-window_started",)
    readonly_fields = ("address", "failures", "window_started", "blocked_until")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
