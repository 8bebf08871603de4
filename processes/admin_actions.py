"""What the process admin shows and offers: status badges, and each action's button, statuses and explanation."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.html import format_html
from django.utils.safestring import SafeString

from processes.models import ABORTABLE, RETRYABLE, ProcessStatus

P = ProcessStatus

# Badge colours by process or step status: red needs a human, amber will retry or wait, green is done. The
# text on them is white: each gives it a contrast of 4.5:1 or more, in the light and the dark theme alike
# (the same colours as the .status-* rules of templates/admin/processes/process/_styles.html).
BADGE_COLOURS: dict[str, str] = {
    P.COMPLETED: "#2e7d32", "complete": "#2e7d32", "success": "#2e7d32",
    P.FAILED: "#c62828", P.INCONSISTENT_DATA: "#c62828", P.API_UNAVAILABLE: "#c62828",
    P.WAITING: "#b34700", P.SUSPENDED: "#1565c0", "suspend": "#1565c0",
    P.AWAITING_CALLBACK: "#1565c0", "awaiting_callback": "#1565c0", "callback": "#00695c",
    # A parent awaiting its children, and its step row "children started" (the same value for both).
    P.AWAITING_CHILDREN: "#6a1b9a",
    P.RUNNING: "#00727d", P.CREATED: "#00727d", P.RESUMED: "#00727d",
    P.ABORTED: "#616161", "abort": "#616161", "skipped": "#6d4c41",
}
BADGE_DEFAULT = "#455a64"
BADGE_TEXT = "#fff"
# The statuses whose count is highlighted at the top of the list: the processes waiting for a human.
NEEDS_ATTENTION = (P.FAILED, P.WAITING)


def badge(status: str, label: str | None = None) -> SafeString:
    return format_html(
        '<span class="status-badge" style="background:{};color:{};padding:1px 7px;border-radius:8px;'
        'white-space:nowrap">{}</span>',
        BADGE_COLOURS.get(status, BADGE_DEFAULT), BADGE_TEXT, label or status,
    )


@dataclass(frozen=True)
class ActionSpec:
    """One action on a process: the statuses its button shows in, and what its pages say."""

    name: str
    label: str
    statuses: tuple[str, ...]
    explain: str
    verb: str = ""  # what "Cannot ... process X" says, when not the label in lower case


ACTIONS: dict[str, ActionSpec] = {
    "retry": ActionSpec("retry", "Retry", tuple(RETRYABLE),
                        "The failed step runs again from the state of the last successful step, then the "
                        "process continues."),
    "resume": ActionSpec("resume", "Resume", (P.SUSPENDED,),
                         "The process waits for this input. Submitting it logs it with your name and the "
                         "process continues with the next step."),
    "skip": ActionSpec("skip", "Skip failed step", tuple(RETRYABLE),
                       "The failed step is logged as skipped, with your name and the reason, and is not run "
                       "again; the process continues with the next step from the state of the last "
                       "successful step. Only skip a step whose work has been done by other means."),
    "abort": ActionSpec("abort", "Abort", tuple(ABORTABLE),
                        "The process ends for good; its subscriptions stay as they are (an out-of-sync "
                        "subscription stays out of sync). This cannot be undone."),
    "deliver_callback": ActionSpec(
        "deliver_callback", "Deliver callback by hand", (P.AWAITING_CALLBACK,),
        "Your answer is taken as the external system's, logged with your name and the reason, and checked by the "
        "step like any answer; the external system's token then no longer works.", "deliver a callback by hand to"),
}
