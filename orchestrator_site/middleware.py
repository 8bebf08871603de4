"""Middleware: refuse oversized request bodies with 413 before anything reads them; SQLite's lock as 503."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
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


# The lock wait of the request being handled in this thread (milliseconds), while one is: a connection opened
# during the request gets it too (connection_created). A contextvar, so pool threads and other threads keep theirs.
_request_wait_ms: ContextVar[int | None] = ContextVar("sqlite_request_wait_ms", default=None)
_RESTORE = "_orchestrator_busy_timeout_restore"


def _shorten_wait(wrapper: BaseDatabaseWrapper, wait_ms: int) -> None:
    # On the driver's connection, below Django's cursors: these are no queries of the request's (the query logs
    # and the tests' query counts leave them out). The wait it had is put back after the request.
    raw = wrapper.connection
    previous = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout = {wait_ms:d}")
    setattr(wrapper, _RESTORE, (raw, int(previous)))


def _connected_during_a_request(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    wait_ms = _request_wait_ms.get()
    if wait_ms is not None and connection.vendor == "sqlite":
        _shorten_wait(connection, wait_ms)


connection_created.connect(_connected_during_a_request, dispatch_uid="orchestrator-sqlite-request-wait")


class SQLiteBusyMiddleware:
    """On SQLite, a request waits a short while for the write lock, then answers 503 instead of a 500.

    The wait (ORCHESTRATOR["SQLITE_REQUEST_LOCK_WAIT_SECONDS"]) is set on the request's own connection
    for the request only and put back after it: the engine's threads, which keep their connections, wait
    the longer time of the settings. It is set when the request uses the database, not before: a request
    that reads nothing (a static file, a 404, the API docs) opens no connection. A "database is locked"
    error from a view becomes the JSON 503 under /api/ and a plain 503 page elsewhere (the API's views
    answer it themselves: api.exception_handler). On PostgreSQL this does nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if connection.vendor != "sqlite":
            return self.get_response(request)
        wait_ms = max(0, int(float(orchestrator_setting("SQLITE_REQUEST_LOCK_WAIT_SECONDS")) * 1000))
        token = _request_wait_ms.set(wait_ms)
        if connection.connection is not None:  # kept from an earlier request (CONN_MAX_AGE)
            _shorten_wait(connection, wait_ms)
        try:
            return self.get_response(request)
        finally:
            _request_wait_ms.reset(token)
            restore = connection.__dict__.pop(_RESTORE, None)
            # Not closed or replaced meanwhile (a broken one is not reopened to put the wait back).
            if restore is not None and connection.connection is restore[0]:
                restore[0].execute(f"PRAGMA busy_timeout = {restore[1]:d}")

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_locked(exception):
            return None
        from orchestrator_site.api import is_api_request

        logger.warning("%s %s: the SQLite database is locked by another write; answered 503", request.method,
                       request.path)
        return busy_json_response() if is_api_request(request) else busy_page()
