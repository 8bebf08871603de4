"""The engine page of the admin: running, pausing or paused, how many processes run, and pause/resume.

Registered as the admin of EngineSettings (the switch's one row) with the page as its changelist, so it
sits with the other process pages on the admin index: /admin/processes/enginesettings/. Like the API,
any staff user may pause or resume; both go through processes.engine_settings.set_engine_paused.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from processes.engine_settings import EnginePause, engine_pause, engine_status, set_engine_paused
from processes.models import EngineSettings

_UNREAD = object()


def is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def pause_of(request: HttpRequest) -> EnginePause | None:
    """engine_pause(), read once per request: the banner and the page below it (its Start buttons) agree,
    and a page costs one query for it, however many places ask."""
    pause = getattr(request, "_engine_pause", _UNREAD)
    if pause is _UNREAD:
        pause = request._engine_pause = engine_pause()  # type: ignore[attr-defined]
    return pause  # type: ignore[return-value]


class EngineAdmin(admin.ModelAdmin):
    """Not a list of rows: one page showing the engine's state, with its pause switch."""

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.engine_view), name="{}_{}_changelist".format(*info)),
        ]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return self.engine_view(request)

    @staticmethod
    def can_switch(request: HttpRequest) -> bool:
        return is_staff(request)

    def engine_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self.switch(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
        return TemplateResponse(request, "admin/processes/engine/engine.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Engine",
            "engine": engine_status(),
            "can_switch": self.can_switch(request),
        })

    def switch(self, request: HttpRequest) -> HttpResponse:
        if not self.can_switch(request):
            raise PermissionDenied("only staff may pause or resume the engine")
        action = request.POST.get("action")
        if action not in ("pause", "resume"):
            return HttpResponseBadRequest("action must be pause or resume")
        before = engine_status()
        status = set_engine_paused(action == "pause", by=request.user)
        if before.paused == status.paused:
            messages.info(request, f"The engine was {status.status} already; nothing changed.")
        elif status.paused:
            running = status.running_processes
            messages.success(
                request,
                f"The engine is {status.status}: no process starts, resumes or retries until it is resumed"
                + (f"; {running} running process(es) stop before their next step." if running else "."),
            )
        else:
            messages.success(request, "The engine is running again.")
        return HttpResponseRedirect(reverse("admin:processes_enginesettings_changelist"))


if admin.site.is_registered(EngineSettings):
    admin.site.unregister(EngineSettings)
admin.site.register(EngineSettings, EngineAdmin)
