"""Fixtures for engine tests: the test workflows, the demo catalogue and active node and port subscriptions."""

from __future__ import annotations

import uuid

import pytest

from processes.models import ProcessStep
from subscriptions.models import ResourceType
from tests.processes import flows, group_flows, wait_flows  # noqa: F401  (the test workflows)
from workflows.node.demo import load_demo_products
from workflows.node.products import NodeProduct, PortProduct

RESET = dict.fromkeys(flows.CONTROL, 0)


@pytest.fixture(autouse=True)
def reset_flow_control():
    flows.CONTROL.update(RESET)
    yield
    flows.CONTROL.update(RESET)


@pytest.fixture
def fast_retries(settings):
    settings.ORCHESTRATOR = {"RETRYSTEP_MAX_TRIES": 3, "RETRYSTEP_BACKOFF_SECONDS": 0.0}


@pytest.fixture
def catalogue(db):
    load_demo_products()


def new_active_node(name: str = "rtr-1", subscription_id: uuid.UUID | None = None):
    """An active, in-sync Node subscription, as a create_node process would leave it (needs the catalogue);
    with `subscription_id`, that id (for tests of what comes in id order)."""
    from subscriptions.models import Product

    model = NodeProduct.new(Product.objects.get(name="Node"), "customer-1", f"Node {name}")
    if subscription_id is not None:
        model.subscription.subscription_id = subscription_id
    model.node.node_name = name
    model.node.node_role = "core"
    model.node.inventory_id = 1
    model.subscription.provision()
    model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


@pytest.fixture
def active_node(catalogue):
    return new_active_node()


@pytest.fixture
def active_port(active_node):
    """An active, in-sync Port 10G subscription on the active node's node block.

    Complete, as an active subscription must be: activating one with empty required fields is refused.
    """
    from subscriptions.models import Product

    model = PortProduct.new(Product.objects.get(name="Port 10G"), "customer-1", "Port rtr-1 xe-0/0/0")
    model.port.port_name = "xe-0/0/0"
    model.port.port_mode = "tagged"
    model.port.node = NodeProduct.load(active_node).node
    model.subscription.provision()
    model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


def effects(prefix: str) -> list[str]:
    return sorted(ResourceType.objects.filter(resource_type__startswith=prefix).values_list("resource_type", flat=True))


def log(process) -> list[tuple[str, str]]:
    return list(ProcessStep.objects.filter(process=process).order_by("id").values_list("name", "status"))


@pytest.fixture
def fake_system():
    """The fake external system of the callback tests, forgetting what earlier tests asked of it."""
    from tests.processes.wait_flows import FakeSystem

    FakeSystem.reset()
    yield FakeSystem
    FakeSystem.reset()
