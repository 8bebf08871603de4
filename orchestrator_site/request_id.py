"""Middleware: every request gets an id (the caller's X-Request-ID when sane), on its log lines and its response."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from orchestrator_site import logcontext

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# Letters, digits and the punctuation of UUIDs, trace ids and base64: nothing that could break a log line
# (no spaces, quotes or control characters such as a newline) and nothing long.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*")


def request_id_for(incoming: str | None) -> str:
    """The caller's id when it is sane (at most MAX_LENGTH safe characters), else a new one (32 hex digits)."""
    if incoming and len(incoming) <= MAX_LENGTH and _SANE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Bind the request's id for logging (orchestrator_site.logcontext), keep it as `request.request_id` and
    answer it in the X-Request-ID header. First in MIDDLEWARE, so every response carries it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        # Not reset when the response leaves the middleware: Django logs a 4xx/5xx answer ("Not Found") after
        # the whole middleware chain, and the development server logs the request line later still. The id
        # is forgotten when the request is finished (below), or replaced by the next request's.
        logcontext.bind_request_id(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


def _forget_request_id(**kwargs: Any) -> None:
    # Sent once the response has been sent and closed: what this thread logs next (a gunicorn worker
    # between requests, a pool thread) is no longer about that request.
    logcontext.forget_request_id()


request_finished.connect(_forget_request_id, dispatch_uid="orchestrator_site.request_id.forget")
