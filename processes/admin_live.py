"""The process admin's live pages: what the process page and the list check for changes, and the list's check."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import parse_etags

from processes.admin_actions import NEEDS_ATTENTION
from processes.live import UNFINISHED, poll_config, process_etag, rows_etag, running_step
from processes.models import Process

logger = logging.getLogger(__name__)

# The list checks at most this many of the unfinished processes it shows (their ids travel in the URL, which
# servers cap at about 4 kB: gunicorn's default is 4094 bytes); a page of more checks its first ones.
LIST_MAX_IDS = 100


class LivePages:
    """For ProcessAdmin: the process page's and the list's live configuration (processes.live), the step in
    progress on the process page, and the list's check for changes (`live/?ids=...`)."""

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        context = super().detail_context(request, process)
        # The API detail's ETag as the API would serve it to this user: the page's first poll answers 304. A
        # parent's children are in it (admin_children put them in the context), so its page follows them.
        family = context.get("process_children")
        stamp = family["children"].stamp if family else ""
        tag = process_etag(process.last_modified_at, process.status, process.note, bool(request.user.is_staff), stamp)
        live = poll_config([process.status], reverse("process-detail", args=[process.pk]), tag)
        return {**context, "live": live, "running_step": running_step(process)}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        changelist = context.get("cl") if isinstance(response, TemplateResponse) and context else None
        if changelist is not None:
            # The rows the page shows, already read for it: no query of its own.
            watched = [row for row in changelist.result_list if row.status in UNFINISHED][:LIST_MAX_IDS]
            rows = [(row.pk, row.status, row.last_modified_at) for row in watched]
            ids = ",".join(row.pk.hex for row in watched)
            url = f"{reverse('admin:processes_process_live')}?ids={ids}"
            context["live_list"] = poll_config([row.status for row in watched], url, rows_etag(rows))
            for item in context.get("status_counts", ()):
                # Which counts turn red or orange once above 0 (live.js's data-live-attention), also while 0.
                item["attention"] = item["status"] in NEEDS_ATTENTION
        return response

    def live_urls(self) -> list[URLPattern]:
        return [path("live/", self.admin_site.admin_view(self.live_list_view), name="processes_process_live")]

    def live_list_view(self, request: HttpRequest) -> HttpResponse:
        """The list's check: 304 while the processes `?ids=` name have the tag of If-None-Match, else the new
        tag (the page then reloads). One query, whatever the statuses."""
        if not self.has_view_permission(request):
            return JsonResponse({"detail": "You may not view processes."}, status=403)
        raw = [part for part in request.GET.get("ids", "").split(",") if part.strip()]
        if len(raw) > LIST_MAX_IDS:
            return JsonResponse({"detail": f"At most {LIST_MAX_IDS} ids, not {len(raw)}."}, status=400)
        try:
            ids = [uuid.UUID(part.strip()) for part in raw]
        except ValueError:
            return JsonResponse({"detail": "ids: process ids separated by commas."}, status=400)
        rows = list(Process.objects.filter(pk__in=ids).values_list("pk", "status", "last_modified_at"))
        tag = rows_etag(rows)
        headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
        wanted = request.headers.get("If-None-Match")
        if wanted and tag in parse_etags(wanted):
            response: HttpResponse = HttpResponseNotModified(headers=headers)
        else:
            response = JsonResponse({"etag": tag, "count": len(rows)}, headers=headers)
        return response
