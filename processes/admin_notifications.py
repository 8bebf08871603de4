"""The notifications of failures in the admin, read-only: what was sent, what is still to send, what was given up."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from processes.notification_models import Notification
from subscriptions.admin import ReadOnlyAdminMixin


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "to send"), ("sent", "sent"), ("given_up", "given up")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        if self.value() == "pending":
            return queryset.filter(next_try_at__isnull=False)
        if self.value() == "sent":
            return queryset.filter(sent_at__isnull=False)
        if self.value() == "given_up":
            return queryset.filter(next_try_at__isnull=True, sent_at__isnull=True)
        return queryset


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Written with each failure and by its sending only (processes/notify_send.py)."""

    list_display = ["created_at", "event", "channel", "process_link", "state", "tries", "next_try_at", "sent_at",
                    "short_error"]
    list_filter = [StateFilter, "channel", "event"]
    search_fields = ["last_error"]
    list_per_page = 50
    fields = ["event", "channel", "process_link", "state", "created_at", "tries", "next_try_at", "sent_at",
              "last_error", "body"]
    readonly_fields = fields

    @admin.display(description="process")
    def process_link(self, obj: Notification) -> SafeString | str:
        pid = str(obj.payload.get("process_id") or obj.process_id or "")
        if not pid:
            return "-"
        label = f"{obj.payload.get('workflow', '')} {pid[:8]}…".strip()
        if obj.process_id is None:
            return f"{label} (deleted)"
        return format_html('<a href="{}">{}</a>', reverse("admin:processes_process_change", args=[pid]), label)

    @admin.display(description="last error")
    def short_error(self, obj: Notification) -> str:
        return obj.last_error if len(obj.last_error) <= 100 else obj.last_error[:99] + "…"

    @admin.display(description="body sent")
    def body(self, obj: Notification) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))
