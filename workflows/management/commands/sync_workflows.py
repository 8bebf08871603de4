"""`manage.py sync_workflows`: make the Workflow rows match the workflows declared in code."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from workflows.sync import sync_workflows


class Command(BaseCommand):
    help = "Create, update and soft-delete Workflow rows to match the code, and say what changed."

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_workflows()
        for name in report.added:
            self.stdout.write(f"  added    {name}")
        for name in report.changed:
            self.stdout.write(f"  changed  {name}")
        for name in report.removed:
            self.stdout.write(f"  removed  {name} (kept for its processes, marked deleted)")
        total = len(report.added) + len(report.changed) + len(report.removed)
        self.stdout.write(self.style.SUCCESS(
            f"Workflows in sync: {len(report.added)} added, {len(report.changed)} changed, "
            f"{len(report.removed)} removed." if total else "Workflows in sync: nothing changed."
        ))
