"""App configuration for processes."""

from __future__ import annotations

from django.apps import AppConfig


class ProcessesConfig(AppConfig):
    name = "processes"
    verbose_name = "Processes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin pages processes add to other apps' models, and the engine page.
        from processes import admin_engine, admin_subscriptions  # noqa: F401
