"""Workflow rows: the database's record of the workflows declared in code, linked to their products."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from subscriptions.models import Product


class Target(models.TextChoices):
    """What a workflow does to a subscription; decides the standard steps around its body."""

    CREATE = "create", "create"
    MODIFY = "modify", "modify"
    TERMINATE = "terminate", "terminate"
    VALIDATE = "validate", "validate"
    SYSTEM = "system", "system"


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    def active(self) -> WorkflowQuerySet:
        return self.filter(deleted_at__isnull=True)


class Workflow(models.Model):
    """A workflow declared in code. Kept (soft-deleted) when removed from code: processes refer to it."""

    workflow_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    target = models.CharField(max_length=20, choices=Target.choices)
    description = models.TextField()
    is_task = models.BooleanField(default=False)
    products = models.ManyToManyField(Product, related_name="workflows", blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Set when the workflow left the code.")

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
