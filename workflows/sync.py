"""Keep the Workflow rows in step with the workflows declared in code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from subscriptions.models import Product
from workflows.models import Workflow
from workflows.registry import WorkflowSpec, all_workflows

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _apply(spec: WorkflowSpec, row: Workflow | None) -> tuple[Workflow, list[str]]:
    wanted = {"target": spec.target, "description": spec.description, "is_task": spec.is_task, "deleted_at": None}
    changes: list[str] = []
    if row is None:
        row = Workflow.objects.create(name=spec.name, **wanted)
    else:
        for key, value in wanted.items():
            if getattr(row, key) != value:
                changes.append("restored" if key == "deleted_at" else f"{key}: {getattr(row, key)!r} → {value!r}")
                setattr(row, key, value)
        if changes:
            row.save()
    products = set(Product.objects.filter(product_type__in=spec.product_types).values_list("pk", flat=True))
    current = set(row.products.values_list("pk", flat=True))
    if products != current:
        row.products.set(products)
        # Also when the row had no products yet (products loaded after the last sync); a new row's
        # changes are not reported (it is "added").
        changes.append(f"products: {len(current)} → {len(products)}")
    return row, changes


@transaction.atomic
def sync_workflows() -> SyncReport:
    """Create, update and soft-delete Workflow rows to match the code; say what changed."""
    report = SyncReport()
    specs = all_workflows()
    rows = {row.name: row for row in Workflow.objects.all()}
    for name, spec in specs.items():
        row, changes = _apply(spec, rows.get(name))
        if name not in rows:
            report.added.append(name)
        elif changes:
            report.changed.append(f"{name} ({'; '.join(changes)})")
    for name, row in rows.items():
        if name not in specs and row.deleted_at is None:
            # Kept, not deleted: its processes still refer to it.
            row.deleted_at = timezone.now()
            row.save(update_fields=["deleted_at"])
            report.removed.append(name)
    return report


def workflow_row(spec: WorkflowSpec) -> Workflow:
    """The Workflow row of a declared workflow, created on first use if sync_workflows has not run yet."""
    row = Workflow.objects.filter(name=spec.name).first()
    if row is None or row.deleted_at is not None:
        row, _ = _apply(spec, row)
        logger.info("workflow %s: row created on first use (run manage.py sync_workflows after deploys)", spec.name)
    return row
