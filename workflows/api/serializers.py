"""Serializers of the workflows API: a workflow as declared in code, with the products its row links."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workflows.dsl import StepKind
from workflows.forms import json_schema
from workflows.models import Target
from workflows.registry import WorkflowSpec


@dataclass(frozen=True)
class WorkflowItem:
    """What the API shows of a workflow: the code's declaration and the products its database row links."""

    spec: WorkflowSpec
    products: list[uuid.UUID] = field(default_factory=list)


class WorkflowSerializer(serializers.Serializer):
    name = serializers.CharField(source="spec.name")
    target = serializers.ChoiceField(source="spec.target", choices=Target.choices)
    description = serializers.CharField(source="spec.description")
    is_task = serializers.BooleanField(source="spec.is_task")
    products = serializers.ListField(child=serializers.UUIDField(), help_text="Ids of the products it serves.")
    usable_while_out_of_sync = serializers.BooleanField(source="spec.usable_while_out_of_sync")


class WorkflowDetailSerializer(WorkflowSerializer):
    initial_input_form = serializers.SerializerMethodField(
        help_text="JSON Schema (draft 2020-12) of the input the workflow starts with."
    )
    steps = serializers.ListField(child=serializers.CharField(), source="spec.steps.names",
                                  help_text="Step names, in order, including the standard ones.")
    step_groups = serializers.SerializerMethodField(
        help_text="The sub-steps of each step group among `steps`, by the group's name (each group is one step).",
    )
    allowed_statuses = serializers.ListField(
        child=serializers.CharField(), source="spec.allowed_statuses",
        help_text="Lifecycle statuses a subscription must be in for the workflow to start on it (empty: any).",
    )

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}})
    def get_step_groups(self, item: WorkflowItem) -> dict[str, list[str]]:
        return {step.name: step.substeps.names for step in item.spec.steps if step.kind == StepKind.GROUP}

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_initial_input_form(self, item: WorkflowItem) -> dict[str, Any]:
        return json_schema(item.spec.initial_input_form, title=item.spec.description)
