"""The process list's columns, made to fit a 1366 px laptop screen: short cells, the rest of each on hover."""

from __future__ import annotations

import logging

from django.contrib import admin
from django.urls import reverse
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from orchestrator_site import humanize
from processes.admin_actions import badge
from processes.admin_times import total_duration
from processes.models import Process

logger = logging.getLogger(__name__)

# The list shows this much of a failure's reason (with its step's name), a step's name, a subscription's
# description and a user's name; all of each on hover (and on the process page).
REASON_CHARS = 80
STEP_CHARS = 40
DESCRIPTION_CHARS = 32
NAME_CHARS = 24


def cut(text: str, chars: int) -> str:
    """`text` cut to `chars` characters, the last one "…" (not after a space, where it would wrap alone)."""
    return text if len(text) <= chars else text[:chars - 1].rstrip() + "…"


def reason_without_step(process: Process) -> str:
    """The failure's reason without the step's name it starts with ("Deploy: no answer"), shown under it."""
    prefix = f"{process.last_step}: "
    reason = process.failed_reason
    return reason[len(prefix):] if process.last_step and reason.startswith(prefix) else reason


class ProcessColumns:
    """For ProcessAdmin's list: the process with its status, workflow, subscriptions with their customers, the
    last step with why the process stopped there, when it started (relative, exact on hover) and by whom, and
    how long it has taken."""

    @admin.display(description="process · status", ordering="status")
    def process_and_status(self, obj: Process) -> SafeString:
        # The id (the link to the page) with the status under it: one column's width for both; for a child, a
        # link to its parent under them (parent and item are columns of the row: no query).
        cell = format_html('<a class="process-link" href="{}">{}</a><div class="process-status">{}</div>',
                           reverse("admin:processes_process_change", args=[obj.pk]), obj.short_id,
                           badge(obj.status, obj.get_status_display()))
        if obj.parent_id is None:
            return cell
        return format_html('{}<div class="process-parent">child {} of <a href="{}" title="{}">{}</a></div>', cell,
                           (obj.child_index or 0) + 1, reverse("admin:processes_process_change", args=[obj.parent_id]),
                           obj.parent_id, str(obj.parent_id)[:8] + "…")

    @admin.display(description="workflow", ordering="workflow__name")
    def workflow_name(self, obj: Process) -> SafeString:
        # Workflow names are snake_case: let a long one wrap after its underscores, not anywhere.
        return mark_safe("_<wbr>".join(escape(part) for part in obj.workflow.name.split("_")))

    @admin.display(description="subscription · customer")
    def subscription_links(self, obj: Process) -> SafeString | str:
        subscriptions = [link.subscription for link in obj.process_subscriptions.all()]
        return format_html_join(
            "", '<div class="process-subscription"><a href="{}" title="{} ({})">{}</a> '
                '<span class="process-customer" title="{}">{}</span></div>',
            ((reverse("admin:subscriptions_subscription_change", args=[sub.pk]), sub.description, sub.pk,
              cut(sub.description, DESCRIPTION_CHARS), sub.customer_id, cut(sub.customer_id, NAME_CHARS))
             for sub in subscriptions),
        ) or "—"

    @admin.display(description="last step · why it stopped · note", ordering="last_step")
    def last_step_and_reason(self, obj: Process) -> SafeString:
        """What is going on with the process: its last step, why it stopped there, and staff's note on it."""
        return format_html("{}{}", self._step_and_reason(obj), self._note_line(obj))

    def _step_and_reason(self, obj: Process) -> SafeString | str:
        shown = cut(obj.last_step, STEP_CHARS)
        step = format_html('<span class="process-step" title="{}">{}</span>', obj.last_step, shown) if shown else "—"
        if not obj.failed_reason:
            return step
        # About REASON_CHARS in all, two or three lines; the whole reason is in the title (on hover) and on the
        # process page. A reason that starts with the step's name ("Deploy: no answer", as the engine writes
        # them) goes on after it; another one (an abort's) goes under it.
        rest = reason_without_step(obj)
        if rest != obj.failed_reason:
            return format_html('{}<span class="failed-reason" title="{}">: {}</span>', step, obj.failed_reason,
                               cut(rest, max(REASON_CHARS - len(shown) - 2, REASON_CHARS // 2)))
        return format_html('{}<div class="failed-reason" title="{}">{}</div>', step, obj.failed_reason,
                           cut(rest, REASON_CHARS))

    def _note_line(self, obj: Process) -> SafeString | str:
        # The note's own cell (processes.admin_notes), under the step: a column of its own does not fit 1366 px.
        note_short = getattr(self, "note_short", None)
        if not obj.note or note_short is None:
            return ""
        return format_html('<div class="process-note-line"><span class="process-note-label">note:</span> {}</div>',
                           note_short(obj))

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Process) -> SafeString | str:
        return format_html('{}<div class="process-creator" title="{}">by {}</div>',
                           humanize.relative_time_html(obj.started_at, units=1), obj.created_by,
                           cut(obj.created_by, NAME_CHARS))

    @admin.display(description="duration")
    def duration(self, obj: Process) -> SafeString | str:
        text = total_duration(obj)
        if text.endswith(" so far"):  # still open: its time runs on until now
            return format_html('{}<div class="process-so-far">so far</div>', text.removesuffix(" so far"))
        return text
