"""Times and durations as the admin shows them: one exact format with the time zone, relative times, durations."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

logger = logging.getLogger(__name__)

# The one format of an exact moment, in the TIME_ZONE setting's zone: "2026-11-30 06:18:30 UTC". Django's
# own rendering of a date and time (admin columns, read-only fields) uses it too (orchestrator_site/formats).
EXACT_TIME_FORMAT = "Y-m-d H:i:s T"
NONE = "—"

# The units of a duration of a minute or more, largest first.
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def _local(moment: datetime) -> datetime:
    # A naive moment is taken as being in the TIME_ZONE setting's zone, as Django stores it without USE_TZ.
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return timezone.localtime(moment)


def exact_time(moment: datetime | None) -> str:
    """ "2026-11-30 06:18:30 UTC": the moment in the TIME_ZONE setting's zone, naming the zone; "—" for None."""
    if moment is None:
        return NONE
    return date_format(_local(moment), EXACT_TIME_FORMAT)


def _seconds(value: timedelta | float | int | Decimal) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def duration(value: timedelta | float | int | Decimal | None, units: int = 2) -> str:
    """A duration as people say it: "480 ms", "4.2 s", "42 s", "12 min 5 s", "2 h 5 min", "3 d 4 h".

    Under a second in milliseconds, under ten seconds to a tenth, then whole seconds; from a minute on the
    two largest units that are not zero (or `units` of them), as workflows.dsl.human_duration has always
    named a timer's step ("Wait 1 h 5 s"): a step's name must not change under a running process. "—" for
    None.
    """
    if value is None:
        return NONE
    seconds = max(_seconds(value), 0.0)
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        milliseconds = round(seconds * 1000)
        if milliseconds < 1000:
            return f"{milliseconds} ms" if milliseconds else "< 1 ms"
    if seconds < 9.95:
        return f"{round(seconds, 1):g} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    parts = []
    for size, unit in _UNITS:
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:max(units, 1)])


def relative_time(moment: datetime | None, now: datetime | None = None, units: int = 2) -> str:
    """How far a moment is from now: "3 min 12 s ago", "in 2 h", "just now" ("3 min ago" with units=1); "—" for
    None."""
    if moment is None:
        return NONE
    seconds = (_local(moment) - (now or timezone.now())).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    # Whole seconds: "in 4.2 s" would claim a precision the page, rendered once, does not keep.
    text = duration(int(abs(seconds)), units)
    return f"in {text}" if seconds > 0 else f"{text} ago"


def relative_time_html(moment: datetime | None, now: datetime | None = None, units: int = 2) -> SafeString | str:
    """`<time>` saying how long ago (or in how long), with the exact moment in its title, shown on hover."""
    if moment is None:
        return NONE
    return format_html('<time datetime="{}" title="{}">{}</time>', _local(moment).isoformat(),
                       exact_time(moment), relative_time(moment, now, units))


def exact_time_html(moment: datetime | None, now: datetime | None = None) -> SafeString | str:
    """`<time>` with the exact moment, and how long ago (or in how long) in its title, shown on hover."""
    if moment is None:
        return NONE
    return format_html('<time datetime="{}" title="{}">{}</time>', _local(moment).isoformat(),
                       relative_time(moment, now), exact_time(moment))


def span(start: datetime | None, end: datetime | None = None) -> timedelta | None:
    """The time from `start` to `end` (or to now, when there is no end yet); None without a start."""
    if start is None:
        return None
    return (end or timezone.now()) - start
