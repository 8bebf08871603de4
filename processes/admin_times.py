"""The process admin's times, durations and progress, in the words of the timeline (orchestrator_site.humanize)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from orchestrator_site import humanize
from processes.models import FINISHED, RETRYABLE, InputState, Process, ProcessStatus, ProcessStep

logger = logging.getLogger(__name__)

P = ProcessStatus


def exact_and_relative(moment: datetime | None, now: datetime | None = None) -> SafeString | str:
    """ "2026-11-30 06:18:30 UTC · 3 min ago", for a page's fields where there is room for both."""
    if moment is None:
        return humanize.NONE
    return format_html("{} · {}", humanize.exact_time_html(moment, now), humanize.relative_time(moment, now))


def total_duration(process: Process, now: datetime | None = None) -> str:
    """How long the process has taken: started → its end when it is completed or aborted, → now otherwise."""
    if process.status in FINISHED:
        return humanize.duration(humanize.span(process.started_at, process.last_modified_at))
    return f"{humanize.duration(humanize.span(process.started_at, now or timezone.now()))} so far"


def progress(process: Process) -> str:
    """Where the process stands, as its timeline and "Steps still to run" number the steps: "step 4 of 7
    ('Deploy'), attempt 1"; after a failure, the attempt that failed ("attempt 1 failed")."""
    names = list(process.workflow_version or [])
    total = len(names)
    if process.status == P.COMPLETED:
        return f"completed: all {total} steps ran" if total else "completed"
    number = process.current_step + 1
    if not total or number > total:
        return f"step {number}, attempt {process.current_attempt}"
    where = f"step {number} of {total} ('{names[process.current_step]}')"
    if process.status == P.ABORTED:
        return f"aborted at {where}"
    # A failure counts its try up at once (current_attempt is the next try); the timeline shows the one that
    # failed. A waiting process that failed is a @retrystep waiting to try again; a timer has no reason.
    if process.status in RETRYABLE and process.failed_reason and process.current_attempt > 1:
        failed = process.current_attempt - 1
        return f"{where}, attempt {failed} failed; a retry is attempt {process.current_attempt}"
    return f"{where}, attempt {process.current_attempt}"


class ProcessTimes:
    """For ProcessAdmin's page: the progress, times and total duration of the process."""

    @admin.display(description="progress")
    def progress(self, obj: Process) -> str:
        return progress(obj)

    @admin.display(description="started")
    def started_exact(self, obj: Process) -> SafeString | str:
        return exact_and_relative(obj.started_at)

    @admin.display(description="last modified")
    def last_modified_exact(self, obj: Process) -> SafeString | str:
        return exact_and_relative(obj.last_modified_at)

    @admin.display(description="next retry or deadline")
    def next_retry_exact(self, obj: Process) -> SafeString | str:
        return exact_and_relative(obj.next_retry_at)

    @admin.display(description="total duration")
    def total_duration(self, obj: Process) -> str:
        return total_duration(obj)


class StepTimes:
    """For the step log's list: when each step started (relative, exact on hover) and how long it took."""

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: ProcessStep) -> SafeString | str:
        return humanize.relative_time_html(obj.started_at)

    @admin.display(description="duration")
    def duration(self, obj: ProcessStep) -> str:
        return humanize.duration(humanize.span(obj.started_at, obj.completed_at))


class InputTimes:
    """For the inputs' list: when each input came (relative, exact on hover)."""

    @admin.display(description="received", ordering="input_time")
    def received(self, obj: InputState) -> SafeString | str:
        return humanize.relative_time_html(obj.input_time)
