"""`{% process_dashboard %}`: the counts to watch and the completed/failed chart on the admin index."""

from __future__ import annotations

from typing import Any

from django import template

from processes.dashboard import NEEDS_A_HUMAN, PERIODS, period_of, settled_per_period, watched_counts
from processes.dashboard_svg import layout

register = template.Library()


def may_see_processes(user: Any) -> bool:
    return bool(user is not None and user.is_active and user.is_staff
                and (user.has_perm("processes.view_process") or user.has_perm("processes.change_process")))


@register.inclusion_tag("admin/processes/dashboard/dashboard.html", takes_context=True)
def process_dashboard(context: Any) -> dict[str, Any]:
    """Two queries: the status counters and one grouped read of the chart's window. `?chart=day` on the
    index switches the chart to days; any other value shows hours."""
    request = context.get("request")
    if request is None or not may_see_processes(getattr(request, "user", None)):
        return {"dashboard": None}
    period = period_of(request.GET.get("chart"))
    return {
        "dashboard": True,
        "counts": watched_counts(),
        "needs_a_human": NEEDS_A_HUMAN,  # highlighted once above 0, also by the live counts (live.js)
        "chart": layout(settled_per_period(period), period),
        "periods": [{"key": p.key, "label": p.label, "selected": p.key == period.key} for p in PERIODS.values()],
    }
