"""The demo product catalogue for the node product family, loaded idempotently by `manage.py load_demo`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from subscriptions.models import FixedInput, Product, ProductBlock, ProductBlockRelation, ResourceType

logger = logging.getLogger(__name__)

RESOURCE_TYPES: dict[str, str] = {
    "node_name": "Host name of the node",
    "node_role": "Role of the node in the network (core or edge)",
    "inventory_id": "Id of the node in the external inventory",
    "ipv4_loopback": "IPv4 loopback address",
    "ipv6_loopback": "IPv6 loopback address",
    "port_name": "Interface name of the port on its node",
    "port_mode": "Tagged or untagged",
    "port_description": "Free-text description configured on the port",
    "enabled": "Whether the port is administratively up",
    "ipv4_network": "IPv4 point-to-point network of the link",
    "ipv6_network": "IPv6 point-to-point network of the link",
}

# name -> (description, tag, resource types)
PRODUCT_BLOCKS: dict[str, tuple[str, str, list[str]]] = {
    "NodeBlock": ("A network node", "NODE",
                  ["node_name", "node_role", "inventory_id", "ipv4_loopback", "ipv6_loopback"]),
    "PortBlock": ("A port on a node", "PORT", ["port_name", "port_mode", "port_description", "enabled"]),
    "LinkBlock": ("A point-to-point link between two ports", "LINK", ["ipv4_network", "ipv6_network"]),
}

# (in_use_by, depends_on, min, max)
BLOCK_RELATIONS: list[tuple[str, str, int, int | None]] = [
    ("PortBlock", "NodeBlock", 1, 1),
    ("LinkBlock", "PortBlock", 2, 2),
]


@dataclass(frozen=True)
class DemoProduct:
    name: str
    description: str
    product_type: str
    tag: str
    blocks: list[str]
    fixed_inputs: dict[str, str] = field(default_factory=dict)


PRODUCTS: list[DemoProduct] = [
    DemoProduct("Node", "A router or switch in the network", "Node", "NODE", ["NodeBlock"],
                {"vendor": "generic"}),
    DemoProduct("Port 10G", "A 10 Gbit/s port on a node", "Port", "PORT", ["PortBlock"], {"speed": "10000"}),
    DemoProduct("Port 100G", "A 100 Gbit/s port on a node", "Port", "PORT", ["PortBlock"], {"speed": "100000"}),
    DemoProduct("Link", "A point-to-point link between two ports", "Link", "LINK", ["LinkBlock"],
                {"mtu": "9000"}),
]


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def note(self, what: str, created: bool, changed: bool) -> None:
        if created:
            self.created.append(what)
        elif changed:
            self.updated.append(what)


def _upsert(model: type, lookup: dict, defaults: dict, report: LoadReport, what: str) -> tuple[Any, bool]:
    obj, created = model.objects.get_or_create(**lookup, defaults=defaults)
    changed = False
    if not created:
        for name, value in defaults.items():
            if getattr(obj, name) != value:
                setattr(obj, name, value)
                changed = True
        if changed:
            obj.save(update_fields=list(defaults))
    report.note(what, created, changed)
    return obj, created


@transaction.atomic
def load_demo_products() -> LoadReport:
    """Create or update the node product family; running it again changes nothing."""
    report = LoadReport()
    resource_types = {
        name: _upsert(ResourceType, {"resource_type": name}, {"description": text}, report, f"resource type {name}")[0]
        for name, text in RESOURCE_TYPES.items()
    }
    blocks: dict[str, ProductBlock] = {}
    for name, (description, tag, types) in PRODUCT_BLOCKS.items():
        block, created = _upsert(ProductBlock, {"name": name}, {"description": description, "tag": tag}, report,
                        f"product block {name}")
        wanted = {resource_types[t].pk for t in types}
        if set(block.resource_types.values_list("pk", flat=True)) != wanted:
            block.resource_types.set(wanted)
            report.note(f"resource types of {name}", False, not created)
        blocks[name] = block
    for parent, child, low, high in BLOCK_RELATIONS:
        _upsert(ProductBlockRelation, {"in_use_by": blocks[parent], "depends_on": blocks[child]},
                {"min": low, "max": high}, report, f"block relation {parent} → {child}")
    for spec in PRODUCTS:
        product, created = _upsert(
            Product, {"name": spec.name},
            {"description": spec.description, "product_type": spec.product_type, "tag": spec.tag},
            report, f"product {spec.name}",
        )
        wanted = {blocks[b].pk for b in spec.blocks}
        if set(product.product_blocks.values_list("pk", flat=True)) != wanted:
            product.product_blocks.set(wanted)
            report.note(f"blocks of product {spec.name}", False, not created)
        for name, value in spec.fixed_inputs.items():
            _upsert(FixedInput, {"product": product, "name": name}, {"value": value}, report,
                    f"fixed input {spec.name}.{name}")
    return report
