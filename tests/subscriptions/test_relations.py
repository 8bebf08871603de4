"""Relations between subscriptions: queried both ways in constant queries, and guarded on every status change."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subscriptions.errors import RelationConflict
from subscriptions.models import Product, Subscription
from subscriptions.relations import depends_on, in_use_by, neighbours
from subscriptions.services import change_lifecycle
from tests.factories import (
    ProductBlockFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
    SubscriptionInstanceFactory,
    SubscriptionInstanceValueFactory,
)
from workflows.node.demo import load_demo_products
from workflows.node.products import NodeProduct, PortProduct

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(db):
    load_demo_products()


def make_node(name: str = "rtr-1") -> Subscription:
    model = NodeProduct.new(Product.objects.get(name="Node"), "customer-1", f"Node {name}")
    model.node.node_name, model.node.node_role, model.node.inventory_id = name, "core", 1
    model.subscription.provision()
    model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


def make_port(node: Subscription, name: str, *, status: str = "active") -> Subscription:
    model = PortProduct.new(Product.objects.get(name="Port 10G"), "customer-1", f"Port {name}")
    model.port.port_name, model.port.port_mode = name, "tagged"
    model.port.node = NodeProduct.load(node).node
    model.subscription.provision()
    if status == "active":
        model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


def test_a_port_uses_its_node_and_the_node_is_used_by_the_port(catalogue):
    node = make_node()
    port = make_port(node, "xe-0/0/0")

    (used,) = depends_on([port.pk])[port.pk]
    assert used.other.subscription_id == node.pk and used.other.status == "active"
    assert used.via == "PortBlock.node"
    (user,) = in_use_by([node.pk])[node.pk]
    assert user.other.subscription_id == port.pk and user.other.description == "Port xe-0/0/0"
    assert in_use_by([port.pk])[port.pk] == [] and depends_on([node.pk])[node.pk] == []
    assert [n.subscription_id for n in neighbours(node.pk)] == [port.pk]


@pytest.mark.parametrize("ports", [3, 30])
def test_relation_queries_cost_the_same_whatever_the_size_of_the_graph(catalogue, ports):
    node = make_node()
    made = [make_port(node, f"xe-0/0/{i}") for i in range(ports)]

    with CaptureQueriesContext(connection) as users_queries:
        users = in_use_by([node.pk])[node.pk]
    with CaptureQueriesContext(connection) as uses_queries:
        uses = depends_on([p.pk for p in made])

    assert {r.other.subscription_id for r in users} == {p.pk for p in made}
    assert all(len(relations) == 1 for relations in uses.values())
    # Two queries one way, three the other (block relations; values naming subscriptions, then those named).
    assert len(users_queries) == 2
    assert len(uses_queries) <= 3


def test_a_value_naming_another_subscription_is_a_relation_both_ways(db):
    reference = ResourceTypeFactory(resource_type="peer_subscription", references_subscription=True)
    target = SubscriptionFactory(lifecycle="active")
    holder = SubscriptionFactory(lifecycle="active")
    instance = SubscriptionInstanceFactory(subscription=holder, product_block=ProductBlockFactory(name="PeerBlock"))
    SubscriptionInstanceValueFactory(subscription_instance=instance, resource_type=reference,
                                     value=str(target.pk))
    # A value of an ordinary resource type that happens to hold an id is no relation.
    SubscriptionInstanceValueFactory(subscription_instance=instance, value=str(SubscriptionFactory().pk))

    (used,) = depends_on([holder.pk])[holder.pk]
    assert used.other.subscription_id == target.pk and used.via == "PeerBlock.peer_subscription"
    (user,) = in_use_by([target.pk])[target.pk]
    assert user.other.subscription_id == holder.pk

    # And the default rule holds for it: the target cannot be terminated while the holder is active.
    with pytest.raises(RelationConflict, match="still uses it"):
        change_lifecycle(target.pk, "terminated", by="tester")


def test_a_malformed_reference_value_is_skipped_not_an_error(db):
    reference = ResourceTypeFactory(resource_type="peer_subscription", references_subscription=True)
    holder = SubscriptionFactory()
    SubscriptionInstanceValueFactory(subscription_instance=SubscriptionInstanceFactory(subscription=holder),
                                     resource_type=reference, value="not-an-id")

    assert depends_on([holder.pk])[holder.pk] == []


def test_terminating_a_node_still_used_by_an_active_port_is_refused_naming_the_port(catalogue):
    node = make_node()
    port = make_port(node, "xe-0/0/0")

    with pytest.raises(RelationConflict) as refused:
        change_lifecycle(node.pk, "terminated", by="tester")

    assert f"cannot terminate Node {node.pk} (Node rtr-1)" in str(refused.value)
    assert f"Port 10G {port.pk} (Port xe-0/0/0, active) still uses it" in str(refused.value)
    node.refresh_from_db()
    assert node.status == "active" and node.lifecycle_events.filter(transition="terminate").count() == 0

    change_lifecycle(port.pk, "terminated", by="tester")
    change_lifecycle(node.pk, "terminated", by="tester")
    assert Subscription.objects.get(pk=node.pk).status == "terminated"


def test_a_node_with_an_active_port_may_not_be_disabled(catalogue):
    node = make_node()
    make_port(node, "xe-0/0/0")

    # The port block declares it: while its node is disabled, a port may not be active.
    with pytest.raises(RelationConflict, match=r"cannot disable Node .*\(Port xe-0/0/0, active\) still uses it"):
        change_lifecycle(node.pk, "disabled", by="tester")
    assert Subscription.objects.get(pk=node.pk).status == "active"


def test_a_port_may_not_become_active_on_a_disabled_node(catalogue):
    node = make_node()
    port = make_port(node, "xe-0/0/0", status="provisioning")
    change_lifecycle(node.pk, "disabled", by="tester")  # the port is only provisioning: allowed

    with pytest.raises(RelationConflict) as refused:
        change_lifecycle(port.pk, "active", by="tester")

    assert f"cannot activate Port 10G {port.pk}" in str(refused.value)
    assert f"it uses Node {node.pk} (Node rtr-1, disabled)" in str(refused.value)
    assert Subscription.objects.get(pk=port.pk).status == "provisioning"


def test_a_terminated_port_never_blocks_anything(catalogue):
    node = make_node()
    port = make_port(node, "xe-0/0/0")
    change_lifecycle(port.pk, "terminated", by="tester")

    change_lifecycle(node.pk, "disabled", by="tester")
    change_lifecycle(node.pk, "active", by="tester")
    change_lifecycle(node.pk, "terminated", by="tester")


def test_the_api_lists_what_a_subscription_uses_and_what_uses_it(catalogue, django_user_model):
    from rest_framework.test import APIClient

    node = make_node()
    port = make_port(node, "xe-0/0/0")
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("reader"))

    of_node = client.get(f"/api/subscriptions/{node.pk}/relations/").json()
    of_port = client.get(f"/api/subscriptions/{port.pk}/relations/").json()

    assert of_node == {"depends_on": [], "in_use_by": [{
        "subscription_id": str(port.pk), "description": "Port xe-0/0/0", "product": "Port 10G", "status": "active",
        "insync": True, "via": "PortBlock.node",
    }]}
    assert [r["subscription_id"] for r in of_port["depends_on"]] == [str(node.pk)] and of_port["in_use_by"] == []
    assert client.get("/api/subscriptions/not-an-id/relations/").status_code == 404


def test_linking_a_port_to_a_terminated_node_and_activating_it_in_one_save_is_refused(catalogue):
    node = make_node()
    node_block = NodeProduct.load(node).node
    change_lifecycle(node.pk, "terminated", by="tester")
    model = PortProduct.new(Product.objects.get(name="Port 10G"), "customer-1", "Port late")
    model.port.port_name, model.port.port_mode = "xe-0/0/1", "tagged"
    model.port.node = node_block  # read while the node was still active
    model.subscription.provision()
    model.subscription.activate()

    with pytest.raises(RelationConflict, match=r"it uses Node .* \(Node rtr-1, terminated\)"):
        model.save()

    assert not Subscription.objects.filter(description="Port late").exists()


def test_a_snapshot_of_a_subscription_whose_values_no_longer_fit_still_has_its_columns(catalogue):
    from subscriptions.models import SubscriptionInstanceValue
    from subscriptions.snapshot import delta, snapshot

    node = make_node()
    SubscriptionInstanceValue.objects.filter(subscription_instance__subscription=node,
                                             resource_type__resource_type="inventory_id").update(value="seven")

    copy = snapshot(node)

    assert copy["description"] == "Node rtr-1" and copy["status"] == "active" and copy["blocks"] == {}
    assert "inventory_id" in copy["blocks_unreadable"]
    assert delta(copy, {**copy, "description": "Node rtr-2"}) == [
        {"field": "description", "old": "Node rtr-1", "new": "Node rtr-2"}]
