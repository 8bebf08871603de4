"""Input forms of the node workflows (DRF serializers: one declaration for CLI, API and admin)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Subscription
from workflows.node.products import NodeRole, PortMode


class CreateNodeForm(serializers.Serializer):
    node_name = serializers.RegexField(
        r"^[a-z0-9][a-z0-9.-]*$", max_length=63, help_text="Host name: lower-case letters, digits, dots and dashes."
    )
    node_role = serializers.ChoiceField(choices=[r.value for r in NodeRole])
    inventory_id = serializers.IntegerField(min_value=1, help_text="Id of the node in the inventory.")


class ModifyNodeForm(serializers.Serializer):
    node_name = serializers.RegexField(r"^[a-z0-9][a-z0-9.-]*$", max_length=63, help_text="The new host name.")
    node_role = serializers.ChoiceField(choices=[r.value for r in NodeRole], required=False)


class CreatePortForm(serializers.Serializer):
    node = serializers.UUIDField(help_text="The id of the active Node subscription the port is on.")
    port_name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9/.:-]*$", max_length=63,
                                       help_text="Interface name on the node, e.g. xe-0/0/1.")
    port_mode = serializers.ChoiceField(choices=[m.value for m in PortMode])
    port_description = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def validate_node(self, value: Any) -> Any:
        # Checked here so a wrong id is a 400 naming the field, before any process exists.
        node = Subscription.objects.select_related("product").filter(pk=value).first()
        if node is None:
            raise serializers.ValidationError(f"subscription {value} does not exist")
        if node.product.product_type != "Node":
            raise serializers.ValidationError(f"subscription {value} is a {node.product.name}, not a node")
        if node.status != SubscriptionLifecycle.ACTIVE:
            raise serializers.ValidationError(f"node {value} is {node.status}; a port needs an active node")
        if not node.insync:
            # A process is changing the node (renaming it, say): a port made now would describe it as it was.
            raise serializers.ValidationError(
                f"node {value} is out of sync (a process is working on it); create the port once it is done"
            )
        return value


class ModifyPortForm(serializers.Serializer):
    port_description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(help_text="Administratively up.")
