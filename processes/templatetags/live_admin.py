"""`{% live_assets %}`: the live pages' script and styles (processes/static/processes/), with what they check."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from processes.live import counts_config

register = template.Library()


@register.inclusion_tag("admin/processes/live/assets.html")
def live_assets() -> dict[str, Any]:
    """For a page's extrahead: the script finds the page's live elements (data-live, data-live-count) itself,
    and does nothing on a page without any."""
    return {"counts": counts_config(), "counts_url": reverse("process-status-counts"),
            "engine_url": reverse("api-engine-settings")}
