"""Read-only API views for products and subscriptions, each page in a fixed number of queries."""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Prefetch, QuerySet
from django.http import Http404, HttpResponseNotModified
from django.utils.http import parse_etags
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.filters import SearchFilter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from orchestrator_site.api import error_responses
from orchestrator_site.errors import NotFound
from subscriptions.api.filters import (
    ProductFilter,
    StableOrderingFilter,
    SubscriptionFilter,
    SubscriptionSearchFilter,
)
from subscriptions.api.serializers import (
    ProductDetailSerializer,
    ProductSerializer,
    SubscriptionDetailSerializer,
    SubscriptionRelationsSerializer,
    SubscriptionSerializer,
)
from subscriptions.models import Product, ProductBlock, ProductBlockRelation, Subscription, SubscriptionLifecycleEvent
from subscriptions.relations import depends_on, in_use_by
from subscriptions.services import get_subscription

# The models of the other side of reverse relations, found through them rather than imported: the
# subscriptions app must not import workflows or processes (DESIGN.md, "Apps and what each owns").
_Workflow = Product._meta.get_field("workflows").related_model
_ProcessSubscription = Subscription._meta.get_field("process_links").related_model


class _NamedNotFoundMixin:
    """A 404 that says what was not found (`subscription <id> does not exist`), not a bare "Not found."."""

    noun: str = "object"
    kwargs: dict[str, Any]

    def get_object(self) -> Any:
        try:
            return super().get_object()  # type: ignore[misc]
        except Http404:
            # Also for a malformed id, which the UUID lookup refuses the same way.
            raise NotFound(f"{self.noun} {self.kwargs.get('id')} does not exist") from None


# A list answers 400 for a malformed filter value; a detail 404 for an unknown (or malformed) id.
LIST_ERRORS = error_responses(400, 401)
DETAIL_ERRORS = error_responses(401, 404)


@extend_schema_view(
    list=extend_schema(summary="List products", description="Filter by product type, tag and status; search "
                       "name and description.", responses={200: ProductSerializer(many=True), **LIST_ERRORS}),
    retrieve=extend_schema(
        summary="A product",
        description="With its fixed inputs, its product blocks (their resource types and the blocks they "
        "hold, with min and max), and the workflows that serve it.",
        responses={200: ProductDetailSerializer, **DETAIL_ERRORS},
    ),
)
class ProductViewSet(_NamedNotFoundMixin, viewsets.ReadOnlyModelViewSet):
    noun = "product"
    lookup_field = "product_id"
    lookup_url_kwarg = "id"
    filter_backends = [DjangoFilterBackend, SearchFilter, StableOrderingFilter]
    filterset_class = ProductFilter
    search_fields = ["name", "description"]
    ordering_fields = ["name", "product_type", "tag", "status", "created_at"]
    ordering = ["name"]

    def get_queryset(self) -> QuerySet[Product]:
        queryset = Product.objects.all()
        if self.action != "retrieve":
            return queryset
        # One query per relation, whatever the number of blocks, resource types or workflows.
        blocks = ProductBlock.objects.prefetch_related(
            "resource_types",
            Prefetch(
                "depends_on_relations",
                queryset=ProductBlockRelation.objects.select_related("depends_on").order_by("depends_on__name"),
            ),
        )
        workflows = _Workflow._default_manager.filter(deleted_at__isnull=True).order_by("name")
        return queryset.prefetch_related(
            "fixed_inputs",
            Prefetch("product_blocks", queryset=blocks),
            Prefetch("workflows", queryset=workflows, to_attr="active_workflows"),
        )

    def get_serializer_class(self) -> type[BaseSerializer]:
        return ProductDetailSerializer if self.action == "retrieve" else ProductSerializer


@extend_schema_view(
    list=extend_schema(
        summary="List subscriptions",
        description="Filter by status, insync, product and customer; `search` finds subscriptions with every "
        "word in the description, customer id, a resource value (a node name) or the product's name or type, "
        "or a subscription by its whole id or its first 8 or more hex digits.",
        responses={200: SubscriptionSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="A subscription",
        description="With its typed domain model, lifecycle history and the processes that ran on it. Sends an "
        "`ETag`; a request with `If-None-Match` carrying it gets 304 while nothing changed.",
        parameters=[
            OpenApiParameter(
                "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                description="The ETag of a copy the client holds: 304 if it is still current.",
            )
        ],
        responses={
            200: SubscriptionDetailSerializer,
            304: OpenApiResponse(description="Not modified: the copy with this ETag is still current."),
            **DETAIL_ERRORS,
        },
    ),
)
class SubscriptionViewSet(_NamedNotFoundMixin, viewsets.ReadOnlyModelViewSet):
    noun = "subscription"
    lookup_field = "subscription_id"
    lookup_url_kwarg = "id"
    filter_backends = [DjangoFilterBackend, SubscriptionSearchFilter, StableOrderingFilter]
    filterset_class = SubscriptionFilter
    ordering_fields = ["start_date", "customer_id", "description", "status"]
    ordering = ["-start_date", "subscription_id"]

    def get_queryset(self) -> QuerySet[Subscription]:
        queryset = Subscription.objects.select_related("product")
        if self.action != "retrieve":
            return queryset
        links = _ProcessSubscription._default_manager.select_related("process__workflow").order_by(
            "-process__started_at", "process_id"
        )
        return queryset.prefetch_related(
            Prefetch("lifecycle_events", queryset=SubscriptionLifecycleEvent.objects.order_by("changed_at", "id")),
            Prefetch("process_links", queryset=links),
        )

    def get_serializer_class(self) -> type[BaseSerializer]:
        return SubscriptionDetailSerializer if self.action == "retrieve" else SubscriptionSerializer

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        # DRF has authenticated the request and checked permissions before this runs, so an anonymous
        # client gets its 401 and never learns anything from a 304.
        tag = subscription_etag(kwargs[self.lookup_url_kwarg])
        if tag is not None and _matches(tag, request.headers.get("If-None-Match", "")):
            not_modified = HttpResponseNotModified()
            not_modified["ETag"] = tag
            return not_modified
        response: Response = super().retrieve(request, *args, **kwargs)
        if tag is not None:
            response["ETag"] = tag
        return response

    @extend_schema(
        summary="The subscriptions it uses and those that use it",
        description="Through block relations (a port's node) and through values naming another subscription. "
        "Five queries, whatever the size of the graph.",
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: SubscriptionRelationsSerializer, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def relations(self, request: Request, id: str) -> Response:
        subscription = get_subscription(id)  # NotFound (404), also for a malformed id
        key = subscription.pk
        data = {
            "depends_on": [{**r.other.as_dict(), "via": r.via} for r in depends_on([key])[key]],
            "in_use_by": [{**r.other.as_dict(), "via": r.via} for r in in_use_by([key])[key]],
        }
        return Response(SubscriptionRelationsSerializer(data).data)


def subscription_etag(subscription_id: Any) -> str | None:
    """The subscription detail's ETag, from one query; None if there is no such subscription.

    Everything on the page changes with one of: the subscription's version (its columns, lifecycle
    history and instance values all bump it), the processes linked to it (their number and the newest
    `last_modified_at`). Computed without building the page, so a 304 costs this query only.
    Not covered: blocks the domain model shows from other subscriptions (a port's node), whose changes
    bump the owner's version, not this one's; nor renamed products or workflows.
    """
    try:
        row = (
            Subscription.objects.filter(pk=subscription_id)
            .annotate(processes=Count("process_links"), latest=Max("process_links__process__last_modified_at"))
            .values_list("version", "processes", "latest")
            .first()
        )
    except (ValidationError, ValueError):  # a malformed id: the view answers 404
        return None
    if row is None:
        return None
    version, processes, latest = row
    raw = f"{version}:{processes}:{latest or '-'}"
    return f'"{hashlib.sha256(raw.encode()).hexdigest()[:32]}"'


def _matches(tag: str, if_none_match: str) -> bool:
    # Weak comparison, as RFC 9110 asks for If-None-Match: W/"x" matches "x".
    candidates = parse_etags(if_none_match)
    return "*" in candidates or any(candidate.removeprefix("W/") == tag for candidate in candidates)
