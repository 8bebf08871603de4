"""Filters, search and ordering for the product and subscription lists."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.request import Request
from rest_framework.views import APIView

from subscriptions.models import Product, ProductLifecycle, Subscription, SubscriptionLifecycle
from subscriptions.search import subscription_id_filter


class ProductFilter(django_filters.FilterSet):
    product_type = django_filters.CharFilter(help_text="Exact product type, for example `Node`.")
    tag = django_filters.CharFilter(help_text="Exact tag, for example `NODE`.")
    status = django_filters.ChoiceFilter(choices=ProductLifecycle.choices, help_text="The product's lifecycle.")

    class Meta:
        model = Product
        fields = ["product_type", "tag", "status"]


class SubscriptionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SubscriptionLifecycle.choices, help_text="Lifecycle status.")
    insync = django_filters.BooleanFilter(help_text="In sync (no workflow holds it) or not.")
    # By id, not a ModelChoiceFilter: an unknown product is simply an empty list, with no extra query.
    product = django_filters.UUIDFilter(field_name="product_id", help_text="The product's id.")
    customer_id = django_filters.CharFilter(help_text="Exact customer id.")

    class Meta:
        model = Subscription
        fields = ["status", "insync", "product", "customer_id"]


class SubscriptionSearchFilter(SearchFilter):
    """Search description and customer id, and also find a subscription by its whole id or its first 8+ hex digits.

    The same rule as the admin's search box (subscriptions.search), applied to the whole search term.
    """

    search_description = (
        "Words found in the description or customer id; or a subscription id, whole or its first 8 or more "
        "hex digits."
    )

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: APIView) -> QuerySet[Any]:
        results = super().filter_queryset(request, queryset, view)
        by_id = subscription_id_filter(request.query_params.get(self.search_param, ""))
        if by_id is not None:
            # `queryset` already carries the other filters, so an id search stays within them.
            results = results | queryset.filter(**by_id)
        return results


class StableOrderingFilter(OrderingFilter):
    """?ordering= that always ends with the primary key, so limit/offset pages never repeat or skip rows.

    Ordering by a column with duplicates (status, customer) leaves ties in no defined order, and the
    database may break them differently for each page.
    """

    def get_ordering(self, request: Request, queryset: QuerySet[Any], view: APIView) -> list[str]:
        ordering = list(super().get_ordering(request, queryset, view) or [])
        pk = queryset.model._meta.pk.name
        if not any(field.lstrip("-") in {pk, "pk"} for field in ordering):
            ordering.append(pk)
        return ordering
