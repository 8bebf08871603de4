"""What every API view shares: errors as JSON with a human message and field errors (pages: pagination.py).

Also the site's error views (handler400/403/404/500): under /api/ they answer with the same JSON body, never
an HTML page; elsewhere (the admin) Django's own pages.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orchestrator_site.dbbusy import BUSY_DETAIL, RETRY_AFTER_SECONDS, busy_json_response, busy_page, is_database_locked
from orchestrator_site.errors import OrchestratorError

logger = logging.getLogger(__name__)


class ErrorBodySerializer(serializers.Serializer):
    """Every API error (exception_handler below): a human message, and the fields at fault."""

    detail = serializers.CharField(help_text="What went wrong, for a human.")
    errors = serializers.DictField(
        child=serializers.JSONField(), required=False,
        help_text="Only when fields are at fault: each field's messages (a list, or an object for nested input).",
    )


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The schema's description of the error statuses an operation may answer, all with the same body."""
    return {code: OpenApiResponse(ErrorBodySerializer) for code in codes}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [str(item) for item in detail]
        return [_flatten(item) for item in detail]
    return [str(detail)]


def error_body(detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as `{"detail": "...", "errors": {field: [...]}}` with its status code; never a 500 for bad input."""
    if isinstance(exc, OrchestratorError):
        return Response({**error_body(exc.detail, exc.errors), **exc.body}, status=exc.status_code)
    if is_database_locked(exc):  # SQLite, one writer at a time: busy, not broken (orchestrator_site.dbbusy)
        logger.warning("%s: the SQLite database is locked by another write; answered 503", context.get("view"))
        return Response(error_body(BUSY_DETAIL), status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("the request body is too large"), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        errors = _flatten(errors)
        summary = "; ".join(
            f"{field}: {' '.join(m if isinstance(m, str) else str(m) for m in messages)}"
            for field, messages in errors.items()
        )
        return Response(error_body(f"invalid input ({summary})", errors), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = error_body(str(response.data["detail"]))
    return response


# --- the site's error views: JSON under /api/, Django's pages elsewhere -------------------------------
def is_api_request(request: HttpRequest) -> bool:
    return request.path_info == "/api" or request.path_info.startswith("/api/")


@csrf_exempt  # a client without a CSRF cookie posting to a wrong URL should learn the URL is wrong, not about CSRF
def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """No endpoint at this path: the last route under /api/, so also with DEBUG on (no technical 404 page)."""
    return JsonResponse(
        error_body(f"no API endpoint at {request.path}; see /api/docs/ for the endpoints"),
        status=status.HTTP_404_NOT_FOUND,
    )


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(error_body("bad request: refused as malformed or suspicious"), status=400)
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(error_body(str(exception or "") or "permission denied"), status=403)
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return api_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    """An unexpected error, already logged with its traceback by Django: a client gets no internals.

    SQLite's lock met outside a view (a session saved after it) ends here too: a 503, like in a view.
    """
    if is_database_locked(sys.exc_info()[1]):
        return busy_json_response() if is_api_request(request) else busy_page()
    if is_api_request(request):
        return JsonResponse(
            error_body("internal error: the server could not answer this request; the error has been logged"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request)
