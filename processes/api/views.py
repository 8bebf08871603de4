"""The process API: start, list, show, note, resume, retry, skip, abort and delete processes, via processes.services."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, QuerySet
from django.urls import reverse
from django.utils.http import parse_etags
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator_site.api import error_responses
from orchestrator_site.errors import NotFound
from processes import callbacks, children, engine, idempotency, operations, recently_modified, services, steppages
from processes.api.filters import ProcessFilter, ProcessSearchFilter
from processes.api.serializers import (
    AbortPendingSerializer,
    AbortProcessSerializer,
    DeliverCallbackSerializer,
    EmptySerializer,
    ProcessDetailSerializer,
    ProcessListItemSerializer,
    ProcessNoteSerializer,
    ProcessRefSerializer,
    ResumeProcessSerializer,
    SkipStepSerializer,
    StartProcessSerializer,
    StatusCountsSerializer,
)
from processes.api.step_views import annotate, steps_url
from processes.live import process_etag
from processes.models import Process, ProcessLease, ProcessStatus, ProcessSubscription
from processes.status_counts import status_counts as count_statuses
from processes.subscription_delta import subscription_delta
from workflows.registry import get_workflow


class CanRunProcesses(permissions.BasePermission):
    """Starting, resuming, retrying, aborting and deleting need `processes.run_process` (superusers have it)."""

    message = "you need the permission processes.run_process (\"Can start, resume, retry and abort processes\")"

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("processes.run_process"))


READ_ERRORS = error_responses(401, 404)
ACTION_ERRORS = error_responses(400, 401, 403, 404, 409, 503)


@extend_schema(tags=["processes"])
@extend_schema_view(
    list=extend_schema(summary="List processes", responses={200: ProcessListItemSerializer(many=True),
                                                            **error_responses(400, 401)}),
)
class ProcessViewSet(viewsets.GenericViewSet):
    """Processes: runs of workflows. Every action goes through processes.services (as the admin and commands do)."""

    queryset = Process.objects.all()
    serializer_class = ProcessListItemSerializer
    filter_backends = [DjangoFilterBackend, ProcessSearchFilter]
    filterset_class = ProcessFilter
    # Any string: a malformed id reaches the service and is a JSON 404, not the router's HTML one.
    lookup_value_regex = "[^/]+"
    lookup_url_kwarg = "id"  # the path reads /api/processes/{id}/, as the API contract says

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.action in ("create", "resume", "retry", "skip", "abort", "destroy", "deliver_callback",
                           "partial_update"):
            return [permissions.IsAuthenticated(), CanRunProcesses()]
        return [permissions.IsAuthenticated()]

    def get_queryset(self) -> QuerySet[Process]:
        # One query for the page, one for all its subscription links: the same count whatever its size.
        links = ProcessSubscription.objects.only("process_id", "subscription_id")
        return (
            Process.objects.select_related("workflow")
            .prefetch_related(Prefetch("process_subscriptions", queryset=links))
            .defer("traceback")
        )

    # --- reading -------------------------------------------------------------------------------------
    @staticmethod
    def narrow_to_top(queryset: QuerySet[Process], rows: int) -> QuerySet[Process]:
        """The pagination's hook: ?ordering=last_modified_at reads a page's worth of rows, not every row."""
        return recently_modified.narrow_to_top(queryset, rows)

    def list(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = ProcessListItemSerializer(page, many=True)
        return self.get_paginated_response(serializer.data)

    @extend_schema(
        summary="Show a process with its steps, what is still to run, and the form it waits for",
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER,
                                     description="An ETag from an earlier answer: 304 if unchanged.")],
        responses={200: ProcessDetailSerializer, 304: OpenApiResponse(description="Not modified."), **READ_ERRORS},
    )
    def retrieve(self, request: Request, id: str) -> Response:
        staff = bool(request.user.is_staff)
        wanted = request.headers.get("If-None-Match")
        if wanted:
            # One query, no step rows: most polls of a process that did not move end here.
            try:
                row = (Process.objects.filter(pk=id).annotate(**children.stamp_annotations())
                       .values_list("last_modified_at", "status", "note", "children_count", "children_modified")
                       .first())
            except (DjangoValidationError, ValueError):
                row = None
            if row is None:
                raise NotFound(f"process {id} does not exist")
            tag = process_etag(*row[:3], staff, children.stamp_of(*row[3:]))
            if tag in parse_etags(wanted) or wanted.strip() == "*":
                return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
        process = engine.get_process(id)
        # The newest page of the log only: a long process's whole log (each row with the state after it)
        # made answers of many megabytes. Its last row gives the current state, with no query of its own.
        page = steppages.step_page(process, with_traceback=staff)
        process.step_rows = annotate(process, page)  # type: ignore[attr-defined]
        process.steps_count = page.total  # type: ignore[attr-defined]
        earlier = page.earlier_offset
        process.earlier_steps = (  # type: ignore[attr-defined]
            steps_url(request, process.pk, earlier, page.limit) if earlier is not None else None)
        current = page.items[-1][1].after if page.items else {}
        process.pending_steps = self._pending_steps(process)  # type: ignore[attr-defined]
        process.form = self._form(process)  # type: ignore[attr-defined]
        process.current_state = current  # type: ignore[attr-defined]
        process.subscription_delta = subscription_delta(process, process.current_state)  # type: ignore[attr-defined]
        process.run_record = ProcessLease.objects.filter(process=process).first()  # type: ignore[attr-defined]
        process.waiting_for = callbacks.waiting_for(process)  # type: ignore[attr-defined]
        process.child_of = children.parent_of(process)  # type: ignore[attr-defined]
        # Not `process.children`: that is the related manager of the children's rows.
        family = children.children_of(process)
        process.family = family  # type: ignore[attr-defined]
        stamp = family.stamp if family is not None else ""
        data = ProcessDetailSerializer(process, context={"show_tracebacks": staff, "request": request,
                                                         "process_id": process.pk}).data
        return Response(data, headers={"ETag": process_etag(process.last_modified_at, process.status, process.note,
                                                            staff, stamp),
                                       "Cache-Control": "private, no-cache"})

    @staticmethod
    def _pending_steps(process: Process) -> list[str]:
        if process.status in (ProcessStatus.COMPLETED, ProcessStatus.ABORTED):
            return []
        try:
            names = list(get_workflow(process.workflow.name).steps.names)
        except NotFound:  # the workflow left the code: the steps it had when the process started
            names = list(process.workflow_version)
        return names[process.current_step:]

    @staticmethod
    def _form(process: Process) -> dict[str, Any] | None:
        try:
            return operations.pending_form(process)
        except NotFound:  # the workflow left the code: nothing can resume the process anyway
            return None

    @extend_schema(summary="Count processes per status",
                   description="Exact counts of every status (zeros included), kept by the database as processes "
                               "are written: the same cost with a thousand processes or a million.",
                   responses={200: StatusCountsSerializer, **error_responses(401)})
    @action(detail=False, methods=["get"], url_path="status-counts", filter_backends=[], pagination_class=None)
    def status_counts(self, request: Request) -> Response:
        return Response(StatusCountsSerializer({"counts": count_statuses()}).data)

    # --- acting --------------------------------------------------------------------------------------
    @extend_schema(
        summary="Start a process",
        description=(
            "Starts the workflow and answers once the executor has it (the inline executor runs it to its "
            "end or suspension first), with the process's id and status.\n\n"
            f"With an `{idempotency.HEADER}` header, a repeat by the same user with the same key and the same "
            "body starts nothing and answers **200** with the first request's process (and its status now); "
            "the same key with another body is **422**. Keys are kept at least 24 hours. A start that is "
            "refused leaves no key: it may be repeated with the same key."
        ),
        request=StartProcessSerializer,
        parameters=[OpenApiParameter(idempotency.HEADER, str, OpenApiParameter.HEADER, required=False,
                                     description="A key of your choice (e.g. a UUID) that makes a repeat safe.")],
        responses={
            201: OpenApiResponse(ProcessRefSerializer, description="Started."),
            200: OpenApiResponse(ProcessRefSerializer, description=f"A repeat with the same {idempotency.HEADER}: "
                                                                   "the process the first request started."),
            **error_responses(400, 401, 403, 404, 409, 412, 422, 503),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = StartProcessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def start() -> Process:
            return services.start_process(data["workflow"], subscription_id=data["subscription"],
                                          user_input=data["input"], by=request.user,
                                          subscription_version=data.get("subscription_version"))

        key = request.headers.get(idempotency.HEADER)
        if key is None:
            process, created = start(), True
        else:
            # The validated body (defaults filled in) is what is compared: `{}` and `{"input": {}}` are one request.
            outcome = idempotency.start_once(request.user, key, dict(data), start)
            process, created = outcome.process, outcome.created
        return Response(
            ProcessRefSerializer(process).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers={"Location": reverse("process-detail", args=[process.process_id])},
        )

    @extend_schema(summary="Give a suspended process the input it waits for",
                   request=ResumeProcessSerializer, responses={200: ProcessRefSerializer, **ACTION_ERRORS})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, id: str) -> Response:
        serializer = ResumeProcessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        process = services.resume_process(id, serializer.validated_data["input"], by=request.user)
        return Response(ProcessRefSerializer(process).data)

    @extend_schema(summary="Retry a failed or waiting process from its last successful step",
                   request=EmptySerializer, responses={200: ProcessRefSerializer, **ACTION_ERRORS})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, id: str) -> Response:
        EmptySerializer(data=request.data).is_valid(raise_exception=True)
        process = services.retry_process(id, by=request.user)
        return Response(ProcessRefSerializer(process).data)

    @extend_schema(
        summary="Skip the failed step of a process and run on from the next",
        description="For a failed or waiting process (as in the admin): the failed step is logged as `skipped` with "
                    "who and why, is not run again, and the process continues with the next step from the state of "
                    "the last successful step. The reason is required (400 without one). **409** when the "
                    "process's status allows no skip, or the failed step is its last (retry or abort it instead).",
        request=SkipStepSerializer,
        responses={200: ProcessRefSerializer, **ACTION_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, id: str) -> Response:
        serializer = SkipStepSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        process = services.skip_step(id, by=request.user, reason=serializer.validated_data["reason"])
        return Response(ProcessRefSerializer(process).data)

    @extend_schema(
        summary="Deliver the answer an awaiting process waits for, by hand",
        description="For staff, when the external system answered out of band: the payload is taken as its "
                    "callback would have been (stored under the step's result key, then checked by the step's "
                    "validate), and the log row says who delivered it and why (the reason is required: 400 "
                    "without one). The token handed to the external system stops working. **409** when the "
                    "process awaits no callback.",
        request=DeliverCallbackSerializer,
        responses={200: ProcessRefSerializer, **ACTION_ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="deliver-callback")
    def deliver_callback(self, request: Request, id: str) -> Response:
        serializer = DeliverCallbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        process = services.deliver_callback(id, serializer.validated_data["payload"], by=request.user,
                                            reason=serializer.validated_data["reason"])
        return Response(ProcessRefSerializer(process).data)

    @extend_schema(
        summary="Abort a process for good",
        description="Answers at once. **200**: aborted. **202**: a step of the process is running right now; the "
                    "process is aborted when that step ends (its next step boundary), and `detail` says so.",
        request=AbortProcessSerializer,
        responses={200: ProcessRefSerializer, 202: AbortPendingSerializer,
                   **error_responses(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def abort(self, request: Request, id: str) -> Response:
        serializer = AbortProcessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        process = services.abort_process(id, by=request.user, reason=serializer.validated_data["reason"])
        if getattr(process, "abort_pending", False):
            return Response(AbortPendingSerializer(process).data, status=status.HTTP_202_ACCEPTED)
        return Response(ProcessRefSerializer(process).data)

    @extend_schema(
        summary="Set or clear a process's note",
        description=f"Only `note` may be given (any other field is a 400): staff's word on the process, up to "
                    f"{services.NOTE_MAX_LENGTH} characters (longer is a 400); blank clears it. A process in any "
                    "status, completed or aborted too, takes a note. Its status, log and `last_modified_at` stay as "
                    "they are (the detail's ETag changes with the note). **409** while a step of the process runs "
                    "for longer than a moment: try again.",
        request=ProcessNoteSerializer,
        responses={200: ProcessListItemSerializer, **ACTION_ERRORS},
    )
    def partial_update(self, request: Request, id: str) -> Response:
        serializer = ProcessNoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        process = services.set_note(id, serializer.validated_data["note"], by=request.user)
        row = self.get_queryset().get(pk=process.pk)  # with its subscription links, as the list shows it
        return Response(ProcessListItemSerializer(row).data)

    @extend_schema(
        summary="Delete a task's process and its log",
        description="Only tasks (a workflow's process is its subscription's audit record: abort it instead), "
                    "and only when no worker may be running it (409 otherwise).",
        request=None,
        responses={204: OpenApiResponse(description="Deleted."), **error_responses(401, 403, 404, 409)},
    )
    def destroy(self, request: Request, id: str) -> Response:
        services.delete_task(id, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
