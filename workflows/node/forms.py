"""Input forms of the node workflows (DRF serializers: one declaration for CLI, API and admin)."""

from __future__ import annotations

from rest_framework import serializers

from workflows.node.products import NodeRole


class CreateNodeForm(serializers.Serializer):
    node_name = serializers.RegexField(
        r"^[a-z0-9][a-z0-9.-]*$", max_length=63, help_text="Host name: lower-case letters, digits, dots and dashes."
    )
    node_role = serializers.ChoiceField(choices=[r.value for r in NodeRole])
    inventory_id = serializers.IntegerField(min_value=1, help_text="Id of the node in the inventory.")


class ModifyNodeForm(serializers.Serializer):
    node_name = serializers.RegexField(r"^[a-z0-9][a-z0-9.-]*$", max_length=63, help_text="The new host name.")
    node_role = serializers.ChoiceField(choices=[r.value for r in NodeRole], required=False)
