"""The process admin's side of callbacks and timers: what an awaiting process waits for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from processes import callbacks
from processes.models import Process
from workflows.dsl import human_duration


def relative(moment: datetime, now: datetime | None = None) -> str:
    """How far off a moment is, as people say it: "in 9 min", "2 h 5 min ago"."""
    delta = moment - (now or timezone.now())
    return f"in {human_duration(delta)}" if delta.total_seconds() >= 0 else f"{human_duration(-delta)} ago"


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
    """For ProcessAdmin: the waiting box on the process page."""

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        return {**super().detail_context(request, process), "waiting_for": waiting_box(process)}
