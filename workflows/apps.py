"""App configuration for workflows."""

from __future__ import annotations

from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the example product family's domain models, so a Node/Port/Link subscription
        # can be loaded as its typed model from anywhere.
        from workflows.node import products  # noqa: F401
