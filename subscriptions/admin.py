"""The Django admin for products, product blocks, resource types and subscriptions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Model, Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

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
from subscriptions.search import search_subscriptions


def bump_subscription_versions(subscription_ids: Iterable[uuid.UUID | None]) -> None:
    """Record on each subscription that something belonging to it changed in the admin.

    Instances, their values and their relations are part of a subscription's domain model; changing
    them must increase its version so that a workflow holding an older copy is refused instead of
    overwriting the change. The rows are locked first (in id order), so the bump cannot meet a stale copy.
    """
    ids = {pk for pk in subscription_ids if pk is not None}
    if not ids:
        return
    with transaction.atomic():
        for subscription in Subscription.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
            subscription.bump_version()


class BumpsSubscriptionVersionMixin:
    """For admins of the parts of a subscription: every save or delete bumps the subscription's version."""

    # The lookup from the admin's model to the id of the subscription it belongs to.
    subscription_lookup: str = ""
    model: type[Model]

    def subscription_ids(self, queryset: QuerySet[Any]) -> set[uuid.UUID]:
        return set(queryset.values_list(self.subscription_lookup, flat=True))

    def _ids_of(self, obj: Model) -> set[uuid.UUID]:
        if obj.pk is None:
            return set()
        return self.subscription_ids(self.model._default_manager.filter(pk=obj.pk))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Before and after the save: moving an instance to another subscription changes both.
        before = self._ids_of(obj) if change else set()
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        bump_subscription_versions(before | self._ids_of(obj))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        ids = self._ids_of(obj)
        with transaction.atomic():
            super().delete_model(request, obj)  # type: ignore[misc]
            bump_subscription_versions(ids)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = self.subscription_ids(queryset)
        with transaction.atomic():
            super().delete_queryset(request, queryset)  # type: ignore[misc]
            bump_subscription_versions(ids)


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



class SubscriptionAdminForm(forms.ModelForm):
    """The subscription form, refusing to save over a change someone else made after the page opened.

    The model refuses stale saves within one request; the hidden `expected_version` carries the version
    the user saw from the page to its POST, so two people editing at once cannot overwrite each other.
    """

    expected_version = forms.IntegerField(widget=forms.HiddenInput)

    class Meta:
        model = Subscription
        fields = ["description", "customer_id", "note", "start_date", "end_date"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expected_version"].initial = self.instance.version

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        expected = cleaned.get("expected_version")
        if expected is not None and expected != self.instance.version:
            raise forms.ValidationError(
                "This subscription was changed by someone else after you opened this page "
                f"(version {expected} then, version {self.instance.version} now). Open it again to see "
                "their change, then make yours.",
                code="stale",
            )
        return cleaned


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionAdminForm
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
    readonly_fields = ["subscription_id", "product", "status", "insync", "version", "instances_and_values"]
    fieldsets = [
        (None, {"fields": ["description", "customer_id", "note", "expected_version"]}),
        ("Product and lifecycle", {
            "fields": ["subscription_id", "product", "status", "insync", "version", "start_date", "end_date"],
        }),
        ("Instances and values", {"fields": ["instances_and_values"]}),
    ]
    inlines = [SubscriptionLifecycleEventInline]

    @admin.display(description="id", ordering="subscription_id")
    def short_id(self, obj: Subscription) -> str:
        return obj.short_id

    @admin.display(description="instances and values")
    def instances_and_values(self, obj: Subscription | None) -> SafeString | str:
        """A table of the subscription's instances and their values, read in two queries."""
        if obj is None or obj.pk is None:
            return "—"
        instances = obj.instances.select_related("product_block").prefetch_related(
            Prefetch("values", queryset=SubscriptionInstanceValue.objects.select_related("resource_type"))
        )
        rows: list[tuple[Any, ...]] = []
        for instance in instances:
            url = reverse("admin:subscriptions_subscriptioninstance_change", args=[instance.pk])
            values = list(instance.values.all()) or [None]
            for value in values:
                rows.append((
                    url,
                    instance.product_block.name,
                    instance.label or "—",
                    value.resource_type.resource_type if value else "—",
                    value.value if value else "—",
                ))
        if not rows:
            return "This subscription has no instances."
        body = format_html_join(
            "\n",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            rows,
        )
        return format_html(
            "<table><thead><tr><th>block</th><th>label</th><th>resource type</th><th>value</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            body,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """The one subscription search (subscriptions.search), as the API's `?search=`; it lists each row once."""
        return search_subscriptions(queryset, search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """No: a subscription is created by a create workflow, which provisions it and records who did."""
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



class SubscriptionInstanceValueInline(admin.TabularInline):
    model = SubscriptionInstanceValue
    extra = 0


@admin.register(SubscriptionInstance)
class SubscriptionInstanceAdmin(BumpsSubscriptionVersionMixin, admin.ModelAdmin):
    subscription_lookup = "subscription_id"
    list_display = ["__str__", "product_block", "label", "subscription"]
    list_filter = ["product_block"]
    list_select_related = ["product_block", "subscription"]
    search_fields = ["label", "product_block__name", "subscription__description", "subscription__customer_id"]
    autocomplete_fields = ["subscription"]
    readonly_fields = ["subscription_instance_id"]
    inlines = [SubscriptionInstanceValueInline]


@admin.register(SubscriptionInstanceValue)
class SubscriptionInstanceValueAdmin(BumpsSubscriptionVersionMixin, admin.ModelAdmin):
    subscription_lookup = "subscription_instance__subscription_id"
    list_display = ["subscription_instance", "resource_type", "value"]
    list_filter = ["resource_type"]
    list_select_related = ["subscription_instance__product_block", "resource_type"]
    search_fields = ["value", "resource_type__resource_type", "subscription_instance__label"]
    autocomplete_fields = ["subscription_instance"]


@admin.register(SubscriptionInstanceRelation)
class SubscriptionInstanceRelationAdmin(BumpsSubscriptionVersionMixin, admin.ModelAdmin):
    # The relation is a field of the domain model of the instance that uses the other one.
    subscription_lookup = "in_use_by__subscription_id"
    list_display = ["in_use_by", "domain_model_attr", "order_id", "depends_on"]
    list_select_related = ["in_use_by__product_block", "depends_on__product_block"]
    search_fields = ["domain_model_attr", "in_use_by__label", "depends_on__label"]
    autocomplete_fields = ["in_use_by", "depends_on"]
