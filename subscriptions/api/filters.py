"""Filters, search and ordering for the product and subscription lists."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.template import loader
from rest_framework.exceptions import ValidationError
from rest_framework.fields import CharField
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.request import Request
from rest_framework.views import APIView

from orchestrator_site.filters import StrictBooleanFilter
from subscriptions.models import Product, ProductLifecycle, Subscription, SubscriptionLifecycle
from subscriptions.search import MAX_SEARCH_WORDS, search_subscriptions, search_words


class ProductFilter(django_filters.FilterSet):
    product_type = django_filters.CharFilter(help_text="Exact product type, for example `Node`.")
    tag = django_filters.CharFilter(help_text="Exact tag, for example `NODE`.")
    status = django_filters.ChoiceFilter(choices=ProductLifecycle.choices, help_text="The product's lifecycle.")

    class Meta:
        model = Product
        fields = ["product_type", "tag", "status"]


class SubscriptionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SubscriptionLifecycle.choices, help_text="Lifecycle status.")
    insync = StrictBooleanFilter(help_text="In sync (no workflow holds it) or not.")
    # By id, not a ModelChoiceFilter: an unknown product is simply an empty list, with no extra query.
    product = django_filters.UUIDFilter(field_name="product_id", help_text="The product's id.")
    customer_id = django_filters.CharFilter(help_text="Exact customer id.")

    class Meta:
        model = Subscription
        fields = ["status", "insync", "product", "customer_id"]


class TermSearchFilter(SearchFilter):
    """`?search=`: the whole term handed to one search function, the one the admin's search box uses too.

    DRF's own SearchFilter ORs `icontains` over the view's `search_fields`; a subclass names its search
    instead, and the view needs no `search_fields`.
    """

    def search(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        raise NotImplementedError

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: APIView) -> QuerySet[Any]:
        # Validated as DRF validates every text parameter: a NUL character is a 400 naming `search`.
        try:
            term = CharField(trim_whitespace=False, allow_blank=True).run_validation(
                request.query_params.get(self.search_param, "")
            )
        except ValidationError as exc:
            raise ValidationError({self.search_param: exc.detail}) from None
        if len(search_words(term)) > MAX_SEARCH_WORDS:
            raise ValidationError({self.search_param: [f"At most {MAX_SEARCH_WORDS} words can be searched for."]})
        # `queryset` already carries the other filters, so the search (an id search too) stays within them.
        return self.search(queryset, term)

    def to_html(self, request: Request, queryset: QuerySet[Any], view: APIView) -> str:
        # The browsable API's search box, showing the whole term (DRF's shows its first word only).
        context = {"param": self.search_param, "term": request.query_params.get(self.search_param, "")}
        return loader.get_template(self.template).render(context)


class SubscriptionSearchFilter(TermSearchFilter):
    """The subscription search of subscriptions.search: words anywhere in a subscription, or its id."""

    search_description = (
        "Words, each of which must be found (ignoring case) in the description, customer id, a resource "
        "value of the subscription's instances (a node name), or its product's name or type; or a "
        "subscription id, whole or its first 8 or more hex digits."
    )

    def search(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        return search_subscriptions(queryset, term)


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
