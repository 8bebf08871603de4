"""The routes external systems call back on: an awaited answer, and progress messages meanwhile.

The token in the path is the only credential (no user, no session, so no CSRF either): it was handed to the
external system by the callback step's action, works once, and stops working at the deadline, a retry or
an abort (processes.callbacks).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator_site.api import error_body, error_responses
from processes import callbacks
from processes.errors import ProcessBusy

CALLBACK_ERRORS = error_responses(400, 404, 409, 413, 415)


class CallbackAcceptedSerializer(serializers.Serializer):
    process_id = serializers.UUIDField()
    detail = serializers.CharField()


class ProgressSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What the external system is doing now (shown with the process).")


class ProgressAddedSerializer(serializers.Serializer):
    process_id = serializers.UUIDField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class _TokenView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [JSONParser]


class CallbackView(_TokenView):
    @extend_schema(
        summary="Deliver the answer a callback step awaits",
        description="Called by the external system with the URL the step's action gave it. The JSON body (any "
                    "JSON value) is stored in the process's state under the step's result key, and the step's "
                    "validate runs next, in a worker. The token works once. **404**: no such process, or it awaits "
                    "no callback with this token (nothing is changed). **409**: the token was used already "
                    "(of two deliveries at once exactly one wins), the process awaits no callback any more, or the "
                    "deadline passed (the step is then failed; a retry asks the external system again). **503** "
                    "with Retry-After: a step of the process is running right now (the one that asked may still "
                    "be committing); call again.",
        request=OpenApiTypes.ANY,
        responses={200: CallbackAcceptedSerializer, **CALLBACK_ERRORS, **error_responses(503)},
        examples=[OpenApiExample("An answer", value={"config_deployed": True, "device": "rtr-1"})],
        tags=["callbacks"],
    )
    def post(self, request: Request, id: str, token: str) -> Response:
        try:
            process = callbacks.deliver(id, token, request.data)
        except ProcessBusy as exc:
            # A step holds the process: most likely the one that asked for this callback, not committed yet
            # (a system that answers within milliseconds). Not a refusal: the same call succeeds shortly.
            detail = f"{exc}; the step that asked for this callback may still be finishing: try again shortly"
            return Response(error_body(detail), status=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": "1"})
        return Response({"process_id": process.process_id, "detail": "callback accepted; the process continues"})


class CallbackProgressView(_TokenView):
    @extend_schema(
        summary="Report progress while a callback step awaits its answer",
        description="Appends a message shown with the process (admin page, API detail, show_process); it never "
                    "advances the process. **404** as for the callback; **409** once the callback was delivered or "
                    "the token stopped working, or when the callback has as many messages as it may keep.",
        request=ProgressSerializer,
        responses={201: ProgressAddedSerializer, **CALLBACK_ERRORS},
        tags=["callbacks"],
    )
    def post(self, request: Request, id: str, token: str) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        progress = callbacks.add_progress(id, token, data.get("message"))
        body = {"process_id": progress.callback.process_id, "message": progress.message,
                "created_at": progress.created_at}
        return Response(ProgressAddedSerializer(body).data, status=status.HTTP_201_CREATED)
