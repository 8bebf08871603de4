"""Template filters for times and durations, all from orchestrator_site.humanize: `{% load orchestrator_times %}`.

- `{{ moment|exact_time }}`: "2026-11-30 06:18:30 UTC" (the TIME_ZONE setting's zone);
- `{{ moment|relative_time }}`: "3 min 12 s ago", "in 2 h";
- `{{ moment|relative_time_html }}`: a `<time>` with the relative time, the exact one in its title (on hover);
- `{{ moment|exact_time_html }}`: a `<time>` with the exact time, the relative one in its title;
- `{{ seconds_or_timedelta|duration }}`: "480 ms", "42 s", "2 h 5 min".
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django import template
from django.utils.safestring import SafeString

from orchestrator_site import humanize

logger = logging.getLogger(__name__)

register = template.Library()


@register.filter
def exact_time(moment: datetime | None) -> str:
    return humanize.exact_time(moment or None)


@register.filter
def relative_time(moment: datetime | None) -> str:
    return humanize.relative_time(moment or None)


@register.filter
def relative_time_html(moment: datetime | None) -> SafeString | str:
    return humanize.relative_time_html(moment or None)


@register.filter
def exact_time_html(moment: datetime | None) -> SafeString | str:
    return humanize.exact_time_html(moment or None)


@register.filter
def duration(value: timedelta | float | int | Decimal | None) -> str:
    if value in (None, ""):
        return humanize.NONE
    return humanize.duration(value)
