"""`{% engine_widget %}`: the engine's status box on the admin index; `{% engine_paused_banner %}`: on every page."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from processes.admin_engine import pause_of
from processes.engine_settings import engine_status

register = template.Library()


def _staff_request(context: Any) -> Any:
    """The request, when a logged-in staff user made it (the login page and anonymous users see nothing)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        return None
    return request


@register.inclusion_tag("admin/processes/engine/widget.html", takes_context=True)
def engine_widget(context: Any) -> dict[str, Any]:
    if _staff_request(context) is None:
        return {"engine": None}
    return {"engine": engine_status(), "engine_url": reverse("admin:processes_enginesettings_changelist")}


@register.inclusion_tag("admin/processes/engine/paused_banner.html", takes_context=True)
def engine_paused_banner(context: Any) -> dict[str, Any]:
    """While the engine is paused: who paused it and since when, with a link to the engine page (one query)."""
    request = _staff_request(context)
    if request is None or context.get("is_popup"):
        return {"pause": None}
    pause = pause_of(request)
    if pause is None:
        return {"pause": None}
    return {"pause": pause, "engine_url": reverse("admin:processes_enginesettings_changelist")}
