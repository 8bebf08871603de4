"""App configuration for workflows."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

logger = logging.getLogger(__name__)


def _sync_after_migrate(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    from workflows.sync import sync_workflows

    report = sync_workflows()
    if report.added or report.changed or report.removed:
        logger.info("workflows synced: %d added, %d changed, %d removed",
                    len(report.added), len(report.changed), len(report.removed))


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the example product family's domain models, so a Node/Port/Link subscription
        # can be loaded as its typed model from anywhere.
        from workflows.node import products  # noqa: F401

        # Every app's workflows are registered before anything can ask for one: the first requests of a
        # freshly started server (or worker threads) never find the registry half-filled.
        from workflows.registry import autodiscover

        autodiscover()

        # After migrate (and after a test database flush), the Workflow rows follow the code.
        post_migrate.connect(_sync_after_migrate, sender=self, dispatch_uid="workflows.sync_after_migrate")
