"""`manage.py load_demo`: create or update the example node product family (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from workflows.node.demo import load_demo_products
from workflows.sync import sync_workflows


class Command(BaseCommand):
    help = "Create or update the demo node product family (Node, Port 10G/100G, Link). Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        report = load_demo_products()
        # The workflows serving these products link to them by product type: link the new ones.
        for change in sync_workflows().changed:
            report.updated.append(f"workflow {change}")
        for what in report.created:
            self.stdout.write(f"  created {what}")
        for what in report.updated:
            self.stdout.write(f"  updated {what}")
        if report.created or report.updated:
            self.stdout.write(self.style.SUCCESS(
                f"Demo products loaded: {len(report.created)} created, {len(report.updated)} updated."
            ))
        else:
            self.stdout.write(self.style.SUCCESS("Demo products already up to date: nothing changed."))
