"""Middleware: refuse oversized request bodies with 413 before anything reads them; SQLite's lock as 503."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.dbbusy import busy_json_response, busy_page, is_database_locked

logger = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Answer 413 to a body larger than ORCHESTRATOR["API_MAX_BODY_BYTES"] (by its Content-Length)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = int(orchestrator_setting("API_MAX_BODY_BYTES"))
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"request body of {length} bytes is larger than the {limit} bytes allowed"}, status=413
            )
        return self.get_response(request)


class SQLiteBusyMiddleware:
    """On SQLite, a request waits a short while for the write lock, then answers 503 instead of a 500.

    The wait (ORCHESTRATOR["SQLITE_REQUEST_LOCK_WAIT_SECONDS"]) is set on the request's own connection
    for the request only and put back after it: the engine's threads, which keep their connections, wait
    the longer time of the settings. A "database is locked" error from a view becomes the JSON 503 under
    /api/ and a plain 503 page elsewhere (the API's views answer it themselves: api.exception_handler).
    On PostgreSQL this does nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if connection.vendor != "sqlite":
            return self.get_response(request)
        wait_ms = max(0, int(float(orchestrator_setting("SQLITE_REQUEST_LOCK_WAIT_SECONDS")) * 1000))
        # On the driver's connection, below Django's cursors: these are no queries of the request's (the
        # query logs and the tests' query counts leave them out).
        connection.ensure_connection()
        raw = connection.connection
        previous = raw.execute("PRAGMA busy_timeout").fetchone()[0]
        raw.execute(f"PRAGMA busy_timeout = {wait_ms:d}")
        try:
            return self.get_response(request)
        finally:
            if connection.connection is raw:  # not closed or replaced meanwhile (a broken one is not reopened)
                raw.execute(f"PRAGMA busy_timeout = {int(previous):d}")

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_locked(exception):
            return None
        from orchestrator_site.api import is_api_request

        logger.warning("%s %s: the SQLite database is locked by another write; answered 503", request.method,
                       request.path)
        return busy_json_response() if is_api_request(request) else busy_page()
