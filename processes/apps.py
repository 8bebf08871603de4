"""App configuration for processes."""

from __future__ import annotations

from django.apps import AppConfig


class ProcessesConfig(AppConfig):
    name = "processes"
    verbose_name = "Processes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin pages processes add to other apps' models, and the engine page.
        from processes import admin_engine, admin_subscriptions, scheduler_thread  # noqa: F401

        # Only with ORCHESTRATOR["EMBEDDED_SCHEDULER"], and only in a process serving requests.
        scheduler_thread.maybe_start()
