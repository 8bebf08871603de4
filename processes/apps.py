"""App configuration for processes."""

from __future__ import annotations

from django.apps import AppConfig


class ProcessesConfig(AppConfig):
    name = "processes"
    verbose_name = "Processes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin pages processes add to other apps' models, the engine page, and the notifications' page;
        # notifications: the hook on every transition to failed (notify on failure), and its settings' check;
        # the checks of the /metrics and health settings.
        from processes import (  # noqa: F401
            admin_engine,
            admin_notifications,
            admin_subscriptions,
            metrics_access,
            notifications,
            scheduler_thread,
            scheduler_ticks,
        )

        # What the workflows' standard steps need of processes (the link table, who holds a subscription),
        # plugged in here: workflows never imports processes.
        from processes.links import Links
        from workflows.process_links import provide

        provide(Links())

        # Only with ORCHESTRATOR["EMBEDDED_SCHEDULER"], and only in a process serving requests.
        scheduler_thread.maybe_start()
