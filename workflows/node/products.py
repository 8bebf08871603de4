"""Typed domain models of the example node product family."""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from subscriptions.domain import BlockModel, SubscriptionModel


class NodeRole(StrEnum):
    CORE = "core"
    EDGE = "edge"


class PortMode(StrEnum):
    TAGGED = "tagged"
    UNTAGGED = "untagged"


class NodeBlock(BlockModel, block="NodeBlock"):
    """A network node (router or switch) as the inventory knows it."""

    node_name: str
    node_role: NodeRole
    inventory_id: int
    ipv4_loopback: IPv4Address | None
    ipv6_loopback: IPv6Address | None


class PortBlock(BlockModel, block="PortBlock"):
    """A port on a node; the node belongs to the node's own subscription."""

    # A port cannot carry traffic on a node that does not: while its node is disabled it may not be
    # active, and once its node is terminated it must be terminated too.
    USER_STATUSES = {
        "disabled": ("initial", "provisioning", "disabled", "terminated"),
        "terminated": ("terminated",),
    }

    port_name: str
    port_mode: PortMode
    port_description: str | None
    enabled: bool = True
    node: NodeBlock


class LinkBlock(BlockModel, block="LinkBlock"):
    """A point-to-point link between two ports, each owned by its port subscription."""

    ipv4_network: IPv4Network | None
    ipv6_network: IPv6Network | None
    ports: list[PortBlock]


class NodeProduct(SubscriptionModel, product_type="Node"):
    node: NodeBlock


class PortProduct(SubscriptionModel, product_type="Port"):
    port: PortBlock


class LinkProduct(SubscriptionModel, product_type="Link"):
    link: LinkBlock
