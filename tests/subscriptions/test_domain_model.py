"""Typed domain models: round trips, validation, lifecycle rules, minimal writes, locking and query cost.

Most tests use the demo node/port/link catalogue; the query-cost test adds a test-only "bag of items"
product (declared below with names unique to this module, since blocks and products register globally).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subscriptions.domain import BlockModel, SubscriptionModel
from subscriptions.errors import DomainModelError, StaleSubscription
from subscriptions.models import (
    Product,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
    SubscriptionLifecycleEvent,
)
from tests.factories import (
    ProductBlockFactory,
    ProductBlockRelationFactory,
    ProductFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
)
from workflows.node.demo import load_demo_products
from workflows.node.products import (
    LinkProduct,
    NodeBlock,
    NodeProduct,
    NodeRole,
    PortBlock,
    PortMode,
    PortProduct,
)

SUBSCRIPTION_TABLE = Subscription._meta.db_table
VALUE_TABLE = SubscriptionInstanceValue._meta.db_table


# --- test-only product: a bag holding any number of items ------------------------------------------
class DomainTestItemBlock(BlockModel, block="DomainTestItemBlock"):
    dt_item_label: str
    dt_item_weight: int | None


class DomainTestBagBlock(BlockModel, block="DomainTestBagBlock"):
    dt_bag_name: str
    items: list[DomainTestItemBlock]


class DomainTestBagProduct(SubscriptionModel, product_type="DomainTestBag"):
    bag: DomainTestBagBlock


# --- fixtures and helpers ----------------------------------------------------------------------------
@pytest.fixture
def catalogue(db):
    load_demo_products()
    return {product.name: product for product in Product.objects.all()}


@pytest.fixture
def bag_product(db):
    label, weight, name = (ResourceTypeFactory(resource_type=n) for n in ("dt_item_label", "dt_item_weight",
                                                                           "dt_bag_name"))
    item_block = ProductBlockFactory(name="DomainTestItemBlock")
    item_block.resource_types.set([label, weight])
    bag_block = ProductBlockFactory(name="DomainTestBagBlock")
    bag_block.resource_types.set([name])
    ProductBlockRelationFactory(in_use_by=bag_block, depends_on=item_block, min=0, max=None)
    product = ProductFactory(name="Domain test bag", product_type="DomainTestBag")
    product.product_blocks.set([bag_block])
    return product


def make_node(catalogue, name="rtr-1", *, inventory_id=42, role="core", loopback="10.0.0.1") -> NodeProduct:
    model = NodeProduct.new(catalogue["Node"], "customer-1", f"node {name}")
    model.node.node_name = name
    model.node.node_role = role
    model.node.inventory_id = inventory_id
    model.node.ipv4_loopback = loopback
    model.save()
    return model


def make_port(catalogue, node: NodeBlock, name: str, *, product="Port 10G") -> PortProduct:
    model = PortProduct.new(catalogue[product], "customer-1", f"port {name}")
    model.port.port_name = name
    model.port.port_mode = "tagged"
    model.port.node = node
    model.save()
    return model


def make_link(catalogue, ports: list[PortBlock], *, network="10.1.0.0/31") -> LinkProduct:
    model = LinkProduct.new(catalogue["Link"], "customer-1", "link")
    model.link.ipv4_network = network
    model.link.ports = ports
    model.save()
    return model


def make_bag(product, items: int) -> DomainTestBagProduct:
    model = DomainTestBagProduct.new(product, "customer-1", f"bag of {items}")
    model.bag.dt_bag_name = f"bag-{items}"
    model.bag.items = [DomainTestItemBlock(dt_item_label=f"item-{i}", dt_item_weight=i) for i in range(items)]
    model.save()
    return model


def activate(model: SubscriptionModel) -> None:
    model.subscription.provision()
    model.subscription.activate()


@pytest.fixture
def network(catalogue):
    """Two nodes, a port on each, and a link between the two ports: five subscriptions, all initial."""
    node_a = make_node(catalogue, "rtr-a", inventory_id=1, loopback="10.0.0.1")
    node_b = make_node(catalogue, "rtr-b", inventory_id=2, role="edge", loopback="10.0.0.2")
    port_a = make_port(catalogue, node_a.node, "a-side")
    port_b = make_port(catalogue, node_b.node, "b-side", product="Port 100G")
    link = make_link(catalogue, [port_a.port, port_b.port])
    return SimpleNamespace(node_a=node_a, node_b=node_b, port_a=port_a, port_b=port_b, link=link)


def sub_id(model: SubscriptionModel) -> uuid.UUID:
    return model.subscription.subscription_id


def db_state() -> dict[str, list]:
    """Every row the domain models read or write, to prove that a refused save changed nothing."""
    def rows(queryset, *fields):
        return sorted(tuple(str(v) for v in row) for row in queryset.values_list(*fields))

    return {
        "subscriptions": rows(Subscription.objects, "pk", "status", "version", "description", "start_date"),
        "instances": rows(SubscriptionInstance.objects, "pk", "subscription_id", "product_block_id", "label"),
        "values": rows(SubscriptionInstanceValue.objects, "pk", "subscription_instance_id", "resource_type_id",
                       "value"),
        "relations": rows(SubscriptionInstanceRelation.objects, "pk", "in_use_by_id", "depends_on_id",
                          "domain_model_attr", "order_id"),
        "events": rows(SubscriptionLifecycleEvent.objects, "pk", "subscription_id", "transition"),
    }


_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[`"]?(\w+)[`"]?', re.IGNORECASE)


def writes(captured: CaptureQueriesContext) -> Counter:
    """(verb, table) of every INSERT, UPDATE and DELETE captured."""
    found: Counter = Counter()
    for query in captured.captured_queries:
        match = _WRITE.match(query["sql"])
        if match:
            found[(match.group(1).split()[0].upper(), match.group(2))] += 1
    return found


def value_ids(model: SubscriptionModel) -> dict[tuple[str, str], int]:
    return {
        (str(instance), resource_type): pk
        for pk, instance, resource_type in SubscriptionInstanceValue.objects.filter(
            subscription_instance__subscription_id=sub_id(model)
        ).values_list("pk", "subscription_instance_id", "resource_type__resource_type")
    }


# --- 1. round trips ----------------------------------------------------------------------------------
def test_node_round_trip_converts_strings_on_assignment_and_loads_back_by_id_and_by_subscription(catalogue):
    model = NodeProduct.new(catalogue["Node"], "customer-7", "core router in Amsterdam")
    model.node.node_name = "rtr-ams-1"
    model.node.node_role = "core"
    model.node.inventory_id = "42"
    model.node.ipv4_loopback = "10.0.0.1"
    model.node.ipv6_loopback = "2001:db8::1"

    # Converted when assigned, not only when saved.
    assert model.node.node_role is NodeRole.CORE
    assert type(model.node.inventory_id) is int and model.node.inventory_id == 42
    assert model.node.ipv4_loopback == IPv4Address("10.0.0.1")
    assert model.node.ipv6_loopback == IPv6Address("2001:db8::1")

    model.save()
    assert model.node.instance_id is not None

    stored = Subscription.objects.get(pk=sub_id(model))
    for loaded in (NodeProduct.load(sub_id(model)), NodeProduct.load(str(sub_id(model))), NodeProduct.load(stored)):
        assert type(loaded) is NodeProduct
        node = loaded.node
        assert node == model.node
        assert node.instance_id == model.node.instance_id
        assert (node.node_name, node.node_role, node.inventory_id, node.ipv4_loopback, node.ipv6_loopback) == (
            "rtr-ams-1", NodeRole.CORE, 42, IPv4Address("10.0.0.1"), IPv6Address("2001:db8::1")
        )
        assert type(node.node_name) is str
        assert type(node.node_role) is NodeRole
        assert type(node.inventory_id) is int
        assert type(node.ipv4_loopback) is IPv4Address
        assert type(node.ipv6_loopback) is IPv6Address
        assert (loaded.customer_id, loaded.description, loaded.status) == (
            "customer-7", "core router in Amsterdam", "initial"
        )


def test_port_round_trip_keeps_node_of_the_node_subscription(catalogue):
    node = make_node(catalogue, "rtr-1", inventory_id=7)
    model = PortProduct.new(catalogue["Port 10G"], "customer-1", "port to rtr-1")
    model.port.port_name = "ge-0/0/1"
    model.port.port_mode = "untagged"
    model.port.enabled = "false"
    model.port.node = node.node
    assert model.port.port_mode is PortMode.UNTAGGED
    assert model.port.enabled is False
    model.save()

    for loaded in (PortProduct.load(sub_id(model)), PortProduct.load(Subscription.objects.get(pk=sub_id(model)))):
        port = loaded.port
        assert port == model.port
        assert (port.port_name, port.port_mode, port.port_description, port.enabled) == (
            "ge-0/0/1", PortMode.UNTAGGED, None, False
        )
        assert type(port.port_mode) is PortMode
        assert type(port.enabled) is bool
        # The node is the node subscription's own block, not a copy stored in the port subscription.
        assert isinstance(port.node, NodeBlock)
        assert port.node == node.node
        assert port.node.instance_id == node.node.instance_id
        assert type(port.node.inventory_id) is int
    own_blocks = SubscriptionInstance.objects.filter(subscription_id=sub_id(model))
    assert [i.product_block.name for i in own_blocks] == ["PortBlock"]
    assert SubscriptionInstance.objects.filter(subscription_id=sub_id(node)).count() == 1


def test_port_enabled_defaults_to_true(catalogue):
    node = make_node(catalogue)
    port = make_port(catalogue, node.node, "ge-0/0/2")

    assert PortProduct.load(sub_id(port)).port.enabled is True


def test_link_round_trip_keeps_both_ports_in_their_order(catalogue):
    node_a = make_node(catalogue, "rtr-a", inventory_id=1)
    node_b = make_node(catalogue, "rtr-b", inventory_id=2, loopback="10.0.0.2")
    port_a = make_port(catalogue, node_a.node, "a-side")
    port_b = make_port(catalogue, node_b.node, "b-side")

    forward = make_link(catalogue, [port_a.port, port_b.port], network="10.1.0.0/31")
    backward = make_link(catalogue, [port_b.port, port_a.port], network="10.1.0.2/31")

    for link, expected in ((forward, ["a-side", "b-side"]), (backward, ["b-side", "a-side"])):
        loaded = LinkProduct.load(sub_id(link))
        assert loaded.link == link.link
        assert [p.port_name for p in loaded.link.ports] == expected
        assert [p.instance_id for p in loaded.link.ports] == [p.instance_id for p in link.link.ports]
        assert all(isinstance(p, PortBlock) for p in loaded.link.ports)
        assert [p.node.node_name for p in loaded.link.ports] == [{"a-side": "rtr-a", "b-side": "rtr-b"}[e]
                                                                  for e in expected]
        assert type(loaded.link.ipv4_network) is IPv4Network
    assert LinkProduct.load(sub_id(backward)).link.ipv4_network == IPv4Network("10.1.0.2/31")
    # Both links use the ports' own blocks: no port or node block was copied into a link subscription.
    for link in (forward, backward):
        assert [i.product_block.name for i in SubscriptionInstance.objects.filter(subscription_id=sub_id(link))] == [
            "LinkBlock"
        ]


# --- 2. values are checked when assigned --------------------------------------------------------------
BAD_ASSIGNMENTS = [
    pytest.param("node", "ipv4_loopback", "300.1.1.1", "300.1.1.1", id="bad-ipv4"),
    pytest.param("node", "inventory_id", "abc", "abc", id="text-in-int"),
    pytest.param("node", "inventory_id", 1.5, "1.5", id="fraction-in-int"),
    pytest.param("node", "node_role", "spine", "spine", id="unknown-enum-value"),
    pytest.param("port", "node", "rtr-a", "rtr-a", id="text-in-block-field"),
    pytest.param("link", "ports", ["rtr-a"], "rtr-a", id="text-in-block-list"),
    pytest.param("node", "colour", "red", "red", id="unknown-field"),
]


@pytest.mark.parametrize(("target", "field", "bad", "shown"), BAD_ASSIGNMENTS)
def test_invalid_value_is_refused_naming_block_field_and_value_and_nothing_is_written(
    network, target, field, bad, shown
):
    model = {"node": NodeProduct.load(sub_id(network.node_a)),
             "port": PortProduct.load(sub_id(network.port_a)),
             "link": LinkProduct.load(sub_id(network.link))}[target]
    block = getattr(model, target)
    previous = getattr(block, field, None)
    before = db_state()

    with pytest.raises(DomainModelError) as refused:
        setattr(block, field, bad)

    message = str(refused.value)
    assert block.__block_name__ in message
    assert field in message
    assert shown in message
    assert refused.value.status_code == 400
    # The block keeps its previous value, so saving it afterwards writes nothing.
    assert getattr(block, field, None) == previous
    model.save()
    assert db_state() == before


def test_unknown_field_in_block_constructor_is_refused_naming_it(catalogue):
    with pytest.raises(DomainModelError) as refused:
        NodeBlock(node_name="rtr-1", colour="red")

    assert "NodeBlock" in str(refused.value)
    assert "colour" in str(refused.value)
    assert "red" in str(refused.value)


def test_subscription_model_refuses_unknown_fields_and_wrong_blocks(network):
    model = NodeProduct.load(sub_id(network.node_a))

    with pytest.raises(DomainModelError, match="NodeProduct has no field 'colour'"):
        model.colour = "red"
    with pytest.raises(DomainModelError, match=re.escape("NodeProduct.node")):
        model.node = network.port_a.port
    with pytest.raises(DomainModelError, match="status changes through"):
        model.status = "active"
    assert model.node == network.node_a.node


def test_new_refuses_a_product_of_another_type(catalogue):
    with pytest.raises(DomainModelError) as refused:
        NodeProduct.new(catalogue["Port 10G"], "customer-1", "wrong")

    assert "Port 10G" in str(refused.value)
    assert "Node" in str(refused.value)


# --- 3. required fields depend on the lifecycle status ----------------------------------------------
def test_initial_subscription_saves_with_required_fields_empty(catalogue):
    model = NodeProduct.new(catalogue["Node"], "customer-1", "node still being created")
    model.save()

    loaded = NodeProduct.load(sub_id(model))
    assert loaded.status == "initial"
    assert (loaded.node.node_name, loaded.node.node_role, loaded.node.inventory_id) == (None, None, None)
    assert loaded.node.instance_id == model.node.instance_id
    assert not SubscriptionInstanceValue.objects.filter(subscription_instance__subscription_id=sub_id(model))


def test_active_subscription_with_empty_required_field_is_refused_and_nothing_is_written(catalogue):
    model = NodeProduct.new(catalogue["Node"], "customer-1", "node")
    model.node.node_name = "rtr-1"
    model.node.node_role = "edge"
    model.save()
    version = Subscription.objects.get(pk=sub_id(model)).version
    before = db_state()

    activate(model)
    with pytest.raises(DomainModelError) as refused:
        model.save()

    assert "node.inventory_id" in refused.value.errors
    assert "inventory_id" in str(refused.value)
    assert "node.ipv4_loopback" not in refused.value.errors  # optional
    stored = Subscription.objects.get(pk=sub_id(model))
    assert (stored.status, stored.version) == ("initial", version)
    assert db_state() == before

    # Filling it in lets the same model save, with its lifecycle events.
    model.node.inventory_id = 7
    model.save()
    stored = Subscription.objects.get(pk=sub_id(model))
    assert (stored.status, stored.version) == ("active", version + 1)
    assert [e.transition for e in stored.lifecycle_events.all()] == ["provision", "activate"]


def test_optional_fields_may_stay_empty_when_active(catalogue):
    model = NodeProduct.new(catalogue["Node"], "customer-1", "node")
    model.node.node_name = "rtr-1"
    model.node.node_role = "core"
    model.node.inventory_id = 1
    activate(model)
    model.save()

    loaded = NodeProduct.load(sub_id(model))
    assert loaded.status == "active"
    assert (loaded.node.ipv4_loopback, loaded.node.ipv6_loopback) == (None, None)


def test_clearing_a_required_field_of_an_active_subscription_is_refused(network):
    activate(network.port_a)
    network.port_a.save()
    loaded = PortProduct.load(sub_id(network.port_a))
    before = db_state()

    loaded.port.port_name = None
    loaded.port.node = None
    with pytest.raises(DomainModelError) as refused:
        loaded.save()

    assert {"port.port_name", "port.node"} <= set(refused.value.errors)
    assert db_state() == before


def test_active_link_with_one_port_is_refused(network, catalogue):
    link = make_link(catalogue, [network.port_a.port])  # allowed while the link is still being created
    version = Subscription.objects.get(pk=sub_id(link)).version
    before = db_state()

    activate(link)
    with pytest.raises(DomainModelError) as refused:
        link.save()

    assert "link.ports" in refused.value.errors
    assert "at least 2" in " ".join(refused.value.errors["link.ports"])
    stored = Subscription.objects.get(pk=sub_id(link))
    assert (stored.status, stored.version) == ("initial", version)
    assert db_state() == before


@pytest.mark.parametrize("status", ["initial", "active"])
def test_link_with_three_ports_is_refused_in_any_status(network, catalogue, status):
    node_c = make_node(catalogue, "rtr-c", inventory_id=3, loopback="10.0.0.3")
    port_c = make_port(catalogue, node_c.node, "c-side")
    link = LinkProduct.load(sub_id(network.link))
    if status == "active":
        activate(link)
        link.save()
        link = LinkProduct.load(sub_id(network.link))
    before = db_state()

    link.link.ports = [*link.link.ports, port_c.port]
    with pytest.raises(DomainModelError) as refused:
        link.save()

    assert "at most 2" in " ".join(refused.value.errors["link.ports"])
    assert db_state() == before


def test_new_link_with_three_ports_writes_no_subscription(network, catalogue):
    node_c = make_node(catalogue, "rtr-c", inventory_id=3, loopback="10.0.0.3")
    port_c = make_port(catalogue, node_c.node, "c-side")
    before = db_state()

    with pytest.raises(DomainModelError, match="at most 2"):
        make_link(catalogue, [network.port_a.port, network.port_b.port, port_c.port])

    assert db_state() == before


# --- 4. save() writes only what changed ---------------------------------------------------------------
@pytest.mark.parametrize("which", ["node_a", "port_a", "link"])
def test_save_without_change_writes_nothing_and_keeps_the_version(network, which):
    model = type(getattr(network, which)).load(sub_id(getattr(network, which)))
    version = model.version

    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter()
    assert model.version == version
    assert Subscription.objects.get(pk=sub_id(model)).version == version


def test_saving_a_just_saved_model_again_writes_nothing(catalogue):
    model = make_node(catalogue)
    version = model.version

    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter()
    assert Subscription.objects.get(pk=sub_id(model)).version == version


def test_assigning_an_equal_value_is_no_change(network):
    model = NodeProduct.load(sub_id(network.node_a))
    model.node.inventory_id = "1"
    model.node.ipv4_loopback = "10.0.0.1"
    model.node.node_role = NodeRole.CORE

    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter()


def test_changing_one_value_updates_one_row_and_bumps_the_version(network):
    model = NodeProduct.load(sub_id(network.node_a))
    version = model.version
    ids = value_ids(model)

    model.node.node_name = "rtr-a-renamed"
    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter({("UPDATE", SUBSCRIPTION_TABLE): 1, ("UPDATE", VALUE_TABLE): 1})
    assert value_ids(model) == ids
    assert Subscription.objects.get(pk=sub_id(model)).version == version + 1
    loaded = NodeProduct.load(sub_id(model))
    assert loaded.node.node_name == "rtr-a-renamed"
    assert (loaded.node.inventory_id, loaded.node.ipv4_loopback) == (1, IPv4Address("10.0.0.1"))


def test_changing_a_subscription_column_updates_only_the_subscription_row(network):
    model = NodeProduct.load(sub_id(network.node_a))
    version = model.version

    model.description = "renamed node"
    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter({("UPDATE", SUBSCRIPTION_TABLE): 1})
    stored = Subscription.objects.get(pk=sub_id(model))
    assert (stored.description, stored.version) == ("renamed node", version + 1)


def test_clearing_an_optional_value_deletes_its_row_and_setting_it_inserts_one(network):
    model = NodeProduct.load(sub_id(network.node_a))
    version = model.version
    ids = value_ids(model)
    loopback_key = (str(model.node.instance_id), "ipv4_loopback")

    model.node.ipv4_loopback = None
    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter({("UPDATE", SUBSCRIPTION_TABLE): 1, ("DELETE", VALUE_TABLE): 1})
    assert value_ids(model) == {k: v for k, v in ids.items() if k != loopback_key}
    assert NodeProduct.load(sub_id(model)).node.ipv4_loopback is None

    model.node.ipv4_loopback = "10.9.9.9"
    with CaptureQueriesContext(connection) as captured:
        model.save()

    assert writes(captured) == Counter({("UPDATE", SUBSCRIPTION_TABLE): 1, ("INSERT", VALUE_TABLE): 1})
    after = value_ids(model)
    assert {k: v for k, v in after.items() if k != loopback_key} == {k: v for k, v in ids.items()
                                                                      if k != loopback_key}
    assert loopback_key in after
    assert NodeProduct.load(sub_id(model)).node.ipv4_loopback == IPv4Address("10.9.9.9")
    assert Subscription.objects.get(pk=sub_id(model)).version == version + 2


# --- 5. optimistic locking ----------------------------------------------------------------------------
def test_saving_a_stale_copy_is_refused_and_writes_nothing(network):
    first = NodeProduct.load(sub_id(network.node_a))
    second = NodeProduct.load(sub_id(network.node_a))
    version = first.version

    first.node.node_name = "changed-by-first"
    first.save()
    before = db_state()

    second.node.inventory_id = 99
    second.node.ipv4_loopback = None
    second.description = "changed by second"
    with pytest.raises(StaleSubscription) as stale:
        second.save()

    assert str(sub_id(network.node_a)) in str(stale.value)
    assert stale.value.status_code == 409
    assert db_state() == before
    assert second.version == version  # the stale copy still says what it read
    loaded = NodeProduct.load(sub_id(network.node_a))
    assert (loaded.node.node_name, loaded.node.inventory_id, loaded.node.ipv4_loopback) == (
        "changed-by-first", 1, IPv4Address("10.0.0.1")
    )
    assert (loaded.version, loaded.description) == (version + 1, "node rtr-a")


# --- 6. loading costs a constant number of queries -----------------------------------------------------
def count_load_queries(model_class: type[SubscriptionModel], subscription) -> tuple[int, SubscriptionModel]:
    with CaptureQueriesContext(connection) as captured:
        loaded = model_class.load(subscription)
    return len(captured.captured_queries), loaded


def test_loading_costs_the_same_few_queries_whatever_the_number_of_blocks(network, bag_product):
    small, large = make_bag(bag_product, 3), make_bag(bag_product, 30)

    link_queries, link = count_load_queries(LinkProduct, sub_id(network.link))
    small_queries, small_loaded = count_load_queries(DomainTestBagProduct, sub_id(small))
    large_queries, large_loaded = count_load_queries(DomainTestBagProduct, sub_id(large))

    assert link_queries == small_queries == large_queries
    assert large_queries <= 4
    # And the blocks really were loaded, in order, with their values.
    assert [p.port_name for p in link.link.ports] == ["a-side", "b-side"]
    assert [p.node.node_name for p in link.link.ports] == ["rtr-a", "rtr-b"]
    assert [i.dt_item_label for i in small_loaded.bag.items] == [f"item-{i}" for i in range(3)]
    assert [i.dt_item_label for i in large_loaded.bag.items] == [f"item-{i}" for i in range(30)]
    assert [i.dt_item_weight for i in large_loaded.bag.items] == list(range(30))

    # Passing the Subscription saves the query that reads it; still the same for every size.
    by_object = [count_load_queries(cls, Subscription.objects.select_related("product").get(pk=sub_id(m)))[0]
                 for cls, m in ((LinkProduct, network.link), (DomainTestBagProduct, small),
                                (DomainTestBagProduct, large))]
    assert by_object == [large_queries - 1] * 3


# --- 7. blocks of other subscriptions -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("through", "change", "owner"),
    [
        pytest.param("port_a", lambda m: setattr(m.port.node, "node_name", "renamed"), "node_a", id="port-node"),
        pytest.param("link", lambda m: setattr(m.link.ports[0], "port_name", "renamed"), "port_a", id="link-port"),
        pytest.param("link", lambda m: setattr(m.link.ports[1].node, "inventory_id", 5), "node_b",
                     id="link-port-node"),
    ],
)
def test_block_of_another_subscription_cannot_be_changed_through_this_one(network, through, change, owner):
    model = type(getattr(network, through)).load(sub_id(getattr(network, through)))
    before = db_state()

    change(model)
    with pytest.raises(DomainModelError) as refused:
        model.save()

    assert str(sub_id(getattr(network, owner))) in str(refused.value)
    assert db_state() == before


def test_saving_a_link_leaves_the_ports_links_to_their_nodes_alone(network):
    relations = db_state()["relations"]
    link = LinkProduct.load(sub_id(network.link))

    link.link.ipv4_network = "10.2.0.0/31"
    link.save()

    assert db_state()["relations"] == relations
    for port in (network.port_a, network.port_b):
        assert PortProduct.load(sub_id(port)).port.node == port.port.node


def test_relinking_a_block_of_another_subscription_is_refused(network):
    link = LinkProduct.load(sub_id(network.link))
    before = db_state()

    # Moving port a onto node b is a change of the port subscription, not of the link.
    link.link.ports[0].node = network.node_b.node
    with pytest.raises(DomainModelError) as refused:
        link.save()

    assert str(sub_id(network.port_a)) in str(refused.value)
    assert db_state() == before


def test_removing_a_block_another_subscription_uses_is_refused_naming_it(network):
    node = NodeProduct.load(sub_id(network.node_a))
    version = node.version
    before = db_state()

    original = node.node
    node.node = NodeBlock(node_name="replacement", node_role="edge", inventory_id=9)
    with pytest.raises(DomainModelError) as refused:
        node.save()

    assert str(sub_id(network.port_a)) in str(refused.value)
    assert "still use" in str(refused.value)
    assert db_state() == before
    # The refused model is left as it was read: corrected, it saves (and is not taken for a stale copy).
    assert node.version == version
    node.node = original
    node.node.node_name = "rtr-a-renamed"
    node.save()
    assert PortProduct.load(sub_id(network.port_a)).port.node.node_name == "rtr-a-renamed"


def test_removing_a_block_nobody_else_uses_deletes_it_with_its_values(network):
    port = PortProduct.load(sub_id(network.port_a))
    old = port.port.instance_id

    port.port = PortBlock(port_name="ge-0/0/9", port_mode="tagged", node=network.node_b.node)
    link = LinkProduct.load(sub_id(network.link))
    link.link.ports = [network.port_b.port]  # the link no longer uses the old port block
    link.save()
    port.save()

    assert not SubscriptionInstance.objects.filter(pk=old).exists()
    assert not SubscriptionInstanceValue.objects.filter(subscription_instance_id=old).exists()
    loaded = PortProduct.load(sub_id(port))
    assert (loaded.port.port_name, loaded.port.node.node_name) == ("ge-0/0/9", "rtr-b")


# --- 8. choosing the model class ----------------------------------------------------------------------
def test_base_class_load_picks_the_model_of_the_product_type(network):
    for model, expected in ((network.node_a, NodeProduct), (network.port_b, PortProduct),
                            (network.link, LinkProduct)):
        by_id = SubscriptionModel.load(sub_id(model))
        by_object = SubscriptionModel.load(Subscription.objects.get(pk=sub_id(model)))
        assert type(by_id) is expected
        assert type(by_object) is expected
        assert by_id.to_dict() == by_object.to_dict() == expected.load(sub_id(model)).to_dict()


def test_loading_with_the_wrong_model_is_refused(network):
    with pytest.raises(DomainModelError) as refused:
        NodeProduct.load(sub_id(network.port_a))

    message = str(refused.value)
    assert str(sub_id(network.port_a)) in message
    assert "is a Port, not a Node" in message


@pytest.mark.parametrize("missing", [uuid.uuid4(), "not-a-uuid"], ids=["unknown-id", "malformed-id"])
def test_loading_a_subscription_that_does_not_exist_is_refused(catalogue, missing):
    with pytest.raises(DomainModelError) as refused:
        SubscriptionModel.load(missing)

    assert str(missing) in str(refused.value)
    assert "does not exist" in str(refused.value)


def test_base_class_load_of_a_product_without_model_is_refused(db):
    subscription = SubscriptionFactory(product=ProductFactory(product_type="DomainTestUndeclared"))

    with pytest.raises(DomainModelError) as refused:
        SubscriptionModel.load(subscription)

    assert "DomainTestUndeclared" in str(refused.value)


# --- 9. to_dict -----------------------------------------------------------------------------------------
def test_to_dict_is_json_serialisable_and_holds_the_values(network):
    data = LinkProduct.load(sub_id(network.link)).to_dict()

    assert json.loads(json.dumps(data)) == data
    link = data["link"]
    assert link["ipv4_network"] == "10.1.0.0/31"
    assert link["ipv6_network"] is None
    assert [p["port_name"] for p in link["ports"]] == ["a-side", "b-side"]
    port = link["ports"][0]
    assert (port["port_mode"], port["enabled"], port["port_description"]) == ("tagged", True, None)
    assert port["subscription_instance_id"] == str(network.port_a.port.instance_id)
    assert port["node"] == {
        "node_name": "rtr-a",
        "node_role": "core",
        "inventory_id": 1,
        "ipv4_loopback": "10.0.0.1",
        "ipv6_loopback": None,
        "subscription_instance_id": str(network.node_a.node.instance_id),
    }
    assert link["ports"][1]["node"]["node_role"] == "edge"


def test_a_save_that_fails_half_way_leaves_the_model_as_it_was_and_can_be_saved_again(bag_product):
    from subscriptions.models import ResourceType

    bag = make_bag(bag_product, 1)
    bag.subscription.provision(by="alice")
    bag.bag.items = [*bag.bag.items, DomainTestItemBlock(dt_item_label="new", dt_item_weight=7)]
    version = bag.subscription.version
    ResourceType.objects.filter(resource_type="dt_item_weight").update(resource_type="renamed")

    # The subscription row is written first; the missing resource type fails the save after it.
    with pytest.raises(DomainModelError, match="dt_item_weight"):
        bag.save()

    assert bag.subscription.version == version
    assert bag.bag.items[-1].instance_id is None
    assert Subscription.objects.get(pk=sub_id(bag)).version == version
    assert not SubscriptionLifecycleEvent.objects.filter(subscription_id=sub_id(bag)).exists()

    ResourceType.objects.filter(resource_type="renamed").update(resource_type="dt_item_weight")
    bag.save()

    stored = DomainTestBagProduct.load(sub_id(bag))
    assert [i.dt_item_label for i in stored.bag.items] == ["item-0", "new"]
    assert stored.subscription.status == "provisioning"
    assert list(SubscriptionLifecycleEvent.objects.filter(subscription_id=sub_id(bag)).values_list(
        "transition", flat=True)) == ["provision"]
