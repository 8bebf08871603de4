"""GET /metrics: the Prometheus text page, for the addresses and token METRICS_ALLOWED_IPS and METRICS_TOKEN allow."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from processes.metrics import render, take_snapshot
from processes.metrics_access import refusal

logger = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"


def _plain(status: int, line: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(line + "\n", status=status, content_type=TEXT, headers=headers or {})
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        logger.warning("%s (%s)", refused.reason, request.META.get("REMOTE_ADDR", "?"))
        return _plain(refused.status, refused.reason, refused.headers)
    try:
        body = render(take_snapshot())
    except DatabaseError as exc:
        # A failed scrape (Prometheus marks the target down) rather than a page with numbers missing; the
        # fold rolled back, so the next scrape folds the same rows.
        logger.warning("metrics: the database cannot be read: %s", exc)
        return _plain(503, "metrics: unavailable: the database cannot be read")
    response = HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response
