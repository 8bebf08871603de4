"""`{% engine_widget %}`: the engine's status box at the top of the admin index."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from processes.engine_settings import engine_status

register = template.Library()


@register.inclusion_tag("admin/processes/engine/widget.html", takes_context=True)
def engine_widget(context: Any) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        return {"engine": None}
    return {"engine": engine_status(), "engine_url": reverse("admin:processes_enginesettings_changelist")}
