"""SQLite's one writer at a time: a request that finds the database locked answers 503 with Retry-After, not 500.

On SQLite a transaction takes the file's only write lock when it begins (settings: IMMEDIATE), so a
workflow step holds it for as long as it runs and every other write waits. A web request waits
ORCHESTRATOR["SQLITE_REQUEST_LOCK_WAIT_SECONDS"] for it (orchestrator_site.middleware), then gets
"database is locked": the client is told the database is busy and when to try again. PostgreSQL locks
rows, not the database, and never answers this.
"""

from __future__ import annotations

import logging
from html import escape

from django.db import OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

BUSY_DETAIL = (
    "the database is busy; SQLite allows one writer at a time and another write (such as a long workflow step) "
    "holds it: try again shortly, or use PostgreSQL (DATABASE_URL) for concurrent work"
)
# A hint, not a promise: a step may hold the lock longer, and then the retry is answered 503 again.
RETRY_AFTER_SECONDS = 5


def is_database_locked(exc: BaseException | None) -> bool:
    """Whether `exc` is SQLite's "database is locked" (or "database table is locked"), raised through Django."""
    return isinstance(exc, OperationalError) and "is locked" in str(exc) and "database" in str(exc)


def busy_json_response() -> JsonResponse:
    response = JsonResponse({"detail": BUSY_DETAIL}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def busy_page() -> HttpResponse:
    """The admin's answer: a plain page saying what happened and what to do, no traceback."""
    body = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Database busy</title></head>"
        "<body><h1>The database is busy</h1>"
        f"<p>{escape(BUSY_DETAIL[0].upper() + BUSY_DETAIL[1:])}.</p>"
        f"<p>Go back and try again in {RETRY_AFTER_SECONDS} seconds.</p></body></html>"
    )
    response = HttpResponse(body, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
