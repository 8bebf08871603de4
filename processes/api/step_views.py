"""The step log of a process, a page at a time (`/api/processes/{id}/steps/`), and one step with its state."""

from __future__ import annotations

import logging
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from orchestrator_site.api import error_responses
from orchestrator_site.errors import NotFound
from orchestrator_site.pagination import Pagination
from processes import engine, steppages
from processes.api.serializers import ProcessStepPageSerializer, ProcessStepStateSerializer
from processes.models import Process, ProcessStep

logger = logging.getLogger(__name__)


def annotate(process: Process, page: steppages.StepPage, *, with_state: bool = False) -> list[ProcessStep]:
    """The page's rows, each carrying its number and delta (and the whole state after it) for the serializers."""
    rows = []
    for number, shown in page.items:
        row = shown.row
        row.number = number  # type: ignore[attr-defined]
        row.state_delta = shown.delta  # type: ignore[attr-defined]
        if with_state:
            row.full_state = shown.after  # type: ignore[attr-defined]
        rows.append(row)
    return rows


def steps_url(request: Request, process_id: Any, offset: int, limit: int) -> str:
    path = reverse("process-step-list", args=[process_id])
    return request.build_absolute_uri(f"{path}?limit={limit}&offset={offset}")


def _other_page(request: Request, offset: int, limit: int) -> str:
    # The same request (with_state and all) at another offset.
    url = replace_query_param(request.build_absolute_uri(), "limit", limit)
    return replace_query_param(url, "offset", offset)


class ProcessStepListView(APIView):
    """A process's step log, oldest first, a page at a time, each step with what it changed."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        tags=["processes"], operation_id="processes_steps_list",
        summary="List a process's steps, oldest first, each with what it changed",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="Steps per page (default STEPS_PAGE_SIZE, "
                                                                    "at most API_MAX_PAGE_SIZE)."),
            OpenApiParameter("offset", OpenApiTypes.INT, description="Steps to skip from the first."),
            OpenApiParameter("with_state", OpenApiTypes.BOOL,
                             description="Also give the whole state after each step (larger answers)."),
        ],
        responses={200: ProcessStepPageSerializer, **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, id: str) -> Response:
        process = engine.get_process(id)
        paginator = Pagination()
        limit = paginator.get_limit(request) or steppages.page_size()
        offset = paginator.get_offset(request)
        with_state = str(request.query_params.get("with_state", "")).lower() in {"1", "true", "yes"}
        page = steppages.step_page(process, offset=offset, limit=limit, with_traceback=bool(request.user.is_staff))
        data = ProcessStepStateSerializer(annotate(process, page, with_state=with_state), many=True,
                          context={"request": request, "show_tracebacks": bool(request.user.is_staff)}).data
        later, earlier = page.later_offset, page.earlier_offset
        return Response({
            "count": page.total,
            "count_exact": True,  # one process's log: always counted in full
            "next": _other_page(request, later, limit) if later is not None else None,
            "previous": _other_page(request, earlier, limit) if earlier is not None else None,
            "results": data,
        })


class ProcessStepDetailView(APIView):
    """One step of a process's log: what it changed and the whole state after it."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(tags=["processes"], operation_id="processes_steps_retrieve",
                   summary="Show one step of a process with the whole state after it",
                   responses={200: ProcessStepStateSerializer, **error_responses(401, 404)})
    def get(self, request: Request, id: str, number: int) -> Response:
        process = engine.get_process(id)
        page = steppages.step_page(process, offset=number - 1, limit=1) if number >= 1 else None
        if page is None or not page.items:
            raise NotFound(f"process {process.pk} has no step {number}", process_id=process.pk)
        row = annotate(process, page, with_state=True)[0]
        data = ProcessStepStateSerializer(row, context={
            "request": request, "show_tracebacks": bool(request.user.is_staff)}).data
        return Response(data)
