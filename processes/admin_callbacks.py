"""The process admin's side of callbacks and timers: what an awaiting process waits for, and delivery by hand."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone

from orchestrator_site import humanize
from orchestrator_site.errors import InvalidInput, OrchestratorError
from processes import callbacks, services
from processes.admin_forms import DeliverCallbackForm, put_errors_on
from processes.admin_history import with_reason
from processes.models import Process


def relative(moment: datetime, now: datetime | None = None) -> str:
    """How far off a moment is, as people say it: "in 9 min", "2 h 5 min ago"."""
    return humanize.relative_time(moment, now)


def waiting_box(process: Process, now: datetime | None = None) -> dict[str, Any] | None:
    """What the process page's box says the process waits for (processes.callbacks.waiting_for), with how
    far off its deadline or end is; None when it waits for neither a callback nor a timer."""
    waiting = callbacks.waiting_for(process)
    if waiting is None:
        return None
    now = now or timezone.now()
    end = waiting["deadline"] if waiting["kind"] == "callback" else waiting["until"]
    return {**waiting, "end": end, "end_relative": relative(end, now), "overdue": end < now}


class CallbackPages:
    """For ProcessAdmin (which gives the actions' checks, pages and redirects): the waiting box on the process
    page and the page that delivers an awaited callback by hand (processes.services.deliver_callback, as the API)."""

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        return {**super().detail_context(request, process), "waiting_for": waiting_box(process)}

    def callback_urls(self) -> list[URLPattern]:
        return [path("<uuid:object_id>/deliver-callback/", self.admin_site.admin_view(self.deliver_callback_view),
                     name="processes_process_deliver_callback")]

    def deliver_callback_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        process = self._action_process(request, object_id, "deliver_callback")
        if not isinstance(process, Process):
            return process
        waiting = waiting_box(process)
        form = DeliverCallbackForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                services.deliver_callback(process.pk, form.cleaned_data["payload"], by=request.user,
                                          reason=form.cleaned_data["reason"])
            except InvalidInput as exc:
                put_errors_on(form, exc)
            except (OrchestratorError, PermissionDenied) as exc:
                return self._refused(request, process, exc)
            else:
                process.refresh_from_db()  # the executor may have run it on already
                step = waiting["step"] if waiting else process.last_step
                return self._done(request, process, f"Delivered the callback of step {step!r} by hand to",
                                  with_reason(f"Delivered the callback of step {step!r} by hand",
                                              form.cleaned_data["reason"]))
        return self._render_action(request, process, "deliver_callback", form, {"waiting_for": waiting})
