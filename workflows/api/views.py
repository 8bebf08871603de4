"""Views of the workflows API: the workflows declared in code, filtered, and one with its input form."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator_site.api import ErrorBodySerializer
from orchestrator_site.filters import StrictBooleanFilter
from workflows.api.serializers import (
    WorkflowDetailSerializer,
    WorkflowItem,
    WorkflowSerializer,
)
from workflows.models import Target, Workflow
from workflows.registry import all_workflows, get_workflow


class WorkflowFilter(filters.FilterSet):
    target = filters.ChoiceFilter(choices=Target.choices, help_text="Only workflows with this target.")
    product = filters.UUIDFilter(field_name="products", help_text="Only workflows that serve this product (its id).")
    is_task = StrictBooleanFilter(help_text="Only tasks (true) or only workflows on subscriptions (false).")

    class Meta:
        model = Workflow
        fields = ["target", "product", "is_task"]


def _product_ids(row: Workflow) -> list[Any]:
    # Read from the prefetched products, sorted so that a response does not depend on the database's order.
    return sorted((product.pk for product in row.products.all()), key=str)


@extend_schema(tags=["workflows"])
class WorkflowListView(generics.ListAPIView):
    """The workflows declared in code (not those removed from it), by name."""

    serializer_class = WorkflowSerializer
    filterset_class = WorkflowFilter
    # Only the filters above: ordering and search over these items would name code attributes, not columns.
    filter_backends = [filters.DjangoFilterBackend]

    def get_queryset(self) -> QuerySet[Workflow]:
        # Rows are kept (soft-deleted) when a workflow leaves the code; a row whose name the code no
        # longer declares (not yet synced) is left out too, since there is no spec to describe it.
        # The branches of parallel steps run only inside their workflow's processes: not listed.
        names = [name for name, spec in all_workflows().items() if not spec.branch_of]
        return Workflow.objects.active().filter(name__in=names).prefetch_related("products")

    @extend_schema(responses={200: WorkflowSerializer(many=True), 400: ErrorBodySerializer, 401: ErrorBodySerializer})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        specs = all_workflows()
        # Sorted here, not by the database: the code declares only so many workflows, and a name's
        # place in the list must not depend on the database's collation.
        rows = sorted(self.filter_queryset(self.get_queryset()), key=lambda row: row.name)
        page = self.paginate_queryset(rows)
        if page is not None:
            rows = page
        items = [WorkflowItem(specs[row.name], _product_ids(row)) for row in rows]
        data = self.get_serializer(items, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)


@extend_schema(tags=["workflows"])
class WorkflowDetailView(generics.GenericAPIView):
    """One workflow declared in code: its steps, the statuses it may start on, and its input form as JSON Schema."""

    serializer_class = WorkflowDetailSerializer

    @extend_schema(responses={200: WorkflowDetailSerializer, 401: ErrorBodySerializer, 404: ErrorBodySerializer})
    def get(self, request: Request, name: str) -> Response:
        spec = get_workflow(name)  # NotFound (404) naming the known workflows
        row = Workflow.objects.active().filter(name=spec.name).prefetch_related("products").first()
        # A workflow declared but not yet synced to the database has no row, hence no products yet.
        item = WorkflowItem(spec, _product_ids(row) if row is not None else [])
        return Response(self.get_serializer(item).data)
