"""The products and subscriptions REST API: fields, filters, search, ordering, pages, auth, 404, ETag, query cost."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.plumbing import _load_enum_name_overrides
from drf_spectacular.settings import patched_settings, spectacular_settings
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from processes.models import Process
from subscriptions.models import (
    Product,
    Subscription,
    SubscriptionInstanceValue,
    SubscriptionLifecycle,
)
from tests.factories import (
    FixedInputFactory,
    ProcessFactory,
    ProcessSubscriptionFactory,
    ProductBlockFactory,
    ProductBlockRelationFactory,
    ProductFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
    UserFactory,
    WorkflowFactory,
    api_token,
)
from workflows.node.demo import load_demo_products
from workflows.node.products import NodeProduct
from workflows.sync import sync_workflows

pytestmark = pytest.mark.django_db

LIST_FIELDS = {
    "id", "description", "product", "customer_id", "status", "insync", "start_date", "end_date", "note", "version",
}
DETAIL_FIELDS = LIST_FIELDS | {"domain_model", "domain_model_error", "lifecycle_history", "processes"}
PRODUCT_FIELDS = {"id", "name", "description", "product_type", "tag", "status", "created_at", "end_date"}


# --- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
def api() -> APIClient:
    """A client logged in as a plain (not staff) user."""
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client


@pytest.fixture
def catalogue(db) -> dict[str, Product]:
    load_demo_products()
    sync_workflows()  # links the node workflows to the products just loaded
    return {product.name: product for product in Product.objects.all()}


def make_node(catalogue: dict[str, Product], name: str = "rtr-1", *, status: str = "active") -> Subscription:
    """A Node subscription with its domain model filled in, walked to `status`."""
    model = NodeProduct.new(catalogue["Node"], "customer-1", f"Node {name}")
    model.node.node_name = name
    model.node.node_role = "core"
    model.node.inventory_id = 42
    model.node.ipv4_loopback = "10.0.0.1"
    if status != SubscriptionLifecycle.INITIAL:
        model.subscription.provision(by="alice")
    if status == SubscriptionLifecycle.ACTIVE:
        model.subscription.activate(by="alice")
    model.save()
    return model.subscription


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def count_queries(call: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = call()
    assert response.status_code == 200, response.content
    return len(queries.captured_queries)


def detail_url(subscription: Subscription) -> str:
    return f"/api/subscriptions/{subscription.subscription_id}/"


# --- authentication and methods ------------------------------------------------------------------
@pytest.fixture
def urls(db) -> list[str]:
    product = ProductFactory()
    subscription = SubscriptionFactory(product=product)
    return [
        "/api/products/",
        f"/api/products/{product.product_id}/",
        "/api/subscriptions/",
        detail_url(subscription),
    ]


def test_anonymous_requests_get_401_json_with_www_authenticate(urls):
    client = APIClient()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.headers["WWW-Authenticate"] == "Token", url
        assert response.json() == {"detail": "Authentication credentials were not provided."}, url


@pytest.mark.parametrize("is_staff", [False, True], ids=["plain user", "staff"])
def test_any_authenticated_user_may_read(urls, is_staff):
    client = APIClient()
    client.force_login(UserFactory(is_staff=is_staff))  # session authentication, as in a browser
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_token_authentication(urls):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token()}")
    for url in urls:
        assert client.get(url).status_code == 200, url

    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get(urls[2])
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_everything_is_read_only(urls, method, staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    for url in urls:
        response = getattr(client, method)(url, {})
        assert response.status_code == 405, (method, url)
        assert "detail" in response.json()
    assert Subscription.objects.count() == 1
    assert Product.objects.count() == 1


# --- products ------------------------------------------------------------------------------------
def test_product_list_fields(api):
    product = ProductFactory(name="Fibre", description="dark fibre", product_type="Fibre", tag="FIB")
    response = api.get("/api/products/")
    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item == {
        "id": str(product.product_id),
        "name": "Fibre",
        "description": "dark fibre",
        "product_type": "Fibre",
        "tag": "FIB",
        "status": "active",
        "created_at": item["created_at"],
        "end_date": None,
    }
    assert set(item) == PRODUCT_FIELDS
    assert dt.datetime.fromisoformat(item["created_at"]) == product.created_at


def test_product_filters_search_and_ordering(api):
    alpha = ProductFactory(name="Alpha port", description="the first", product_type="Port", tag="PORT")
    beta = ProductFactory(name="Beta", description="carries alpha traffic", product_type="Link", tag="LINK",
                          status="phase out")
    gamma = ProductFactory(name="Gamma", description="unrelated", product_type="Port", tag="EDGE",
                           status="end of life")
    a, b, g = (str(p.product_id) for p in (alpha, beta, gamma))

    assert ids(api.get("/api/products/", {"product_type": "Port"})) == [a, g]
    assert ids(api.get("/api/products/", {"tag": "LINK"})) == [b]
    assert ids(api.get("/api/products/", {"status": "end of life"})) == [g]
    assert ids(api.get("/api/products/", {"product_type": "Port", "tag": "EDGE"})) == [g]
    assert ids(api.get("/api/products/", {"search": "alpha"})) == [a, b]  # name, then description
    assert ids(api.get("/api/products/", {"search": "first"})) == [a]
    assert ids(api.get("/api/products/")) == [a, b, g]  # by name by default
    assert ids(api.get("/api/products/", {"ordering": "-name"})) == [g, b, a]
    assert ids(api.get("/api/products/", {"ordering": "product_type,-name"})) == [b, g, a]

    response = api.get("/api/products/", {"status": "sold out"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"status"}


def test_product_detail_with_fixed_inputs_blocks_and_workflows(api):
    product = ProductFactory(name="Link 10G", product_type="Link10", tag="LINK")
    FixedInputFactory(product=product, name="speed", value="10000")
    FixedInputFactory(product=product, name="mtu", value="9000")
    network, label = ResourceTypeFactory(resource_type="network"), ResourceTypeFactory(resource_type="label")
    link_block = ProductBlockFactory(name="TestLinkBlock", tag="LINK")
    link_block.resource_types.set([network, label])
    port_block = ProductBlockFactory(name="TestPortBlock", tag="PORT")
    vlan_block = ProductBlockFactory(name="TestVlanBlock", tag="VLAN")
    ProductBlockRelationFactory(in_use_by=link_block, depends_on=port_block, min=2, max=2)
    ProductBlockRelationFactory(in_use_by=link_block, depends_on=vlan_block, min=0, max=None)
    product.product_blocks.set([link_block])
    WorkflowFactory(name="modify_link_10g", target="modify", description="Change it", products=[product])
    WorkflowFactory(name="create_link_10g", target="create", description="Make one", products=[product])
    WorkflowFactory(name="old_link_workflow", products=[product], deleted_at=timezone.now())
    WorkflowFactory(name="someone_elses_workflow", products=[ProductFactory()])

    response = api.get(f"/api/products/{product.product_id}/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PRODUCT_FIELDS | {"fixed_inputs", "product_blocks", "workflows"}
    assert body["id"] == str(product.product_id)
    assert body["fixed_inputs"] == [{"name": "mtu", "value": "9000"}, {"name": "speed", "value": "10000"}]
    assert body["product_blocks"] == [
        {
            "id": str(link_block.product_block_id),
            "name": "TestLinkBlock",
            "description": link_block.description,
            "tag": "LINK",
            "status": "active",
            "resource_types": [
                {"resource_type": "label", "description": label.description},
                {"resource_type": "network", "description": network.description},
            ],
            "depends_on": [
                {"id": str(port_block.product_block_id), "name": "TestPortBlock", "min": 2, "max": 2},
                {"id": str(vlan_block.product_block_id), "name": "TestVlanBlock", "min": 0, "max": None},
            ],
        }
    ]
    # Only the product's own workflows still in the code (the soft-deleted one is left out), by name.
    assert body["workflows"] == [
        {"name": "create_link_10g", "target": "create", "description": "Make one"},
        {"name": "modify_link_10g", "target": "modify", "description": "Change it"},
    ]


def test_demo_node_product_lists_its_workflows(api, catalogue):
    node = catalogue["Node"]
    body = api.get(f"/api/products/{node.product_id}/").json()
    names = [workflow["name"] for workflow in body["workflows"]]
    assert names, "the demo node product is served by the node workflows"
    assert names == sorted(node.workflows.filter(deleted_at__isnull=True).values_list("name", flat=True))
    assert {"create", "terminate"} <= {workflow["target"] for workflow in body["workflows"]}
    assert body["fixed_inputs"] == [{"name": "vendor", "value": "generic"}]
    assert [block["name"] for block in body["product_blocks"]] == ["NodeBlock"]


@pytest.mark.parametrize("product_id", [str(uuid.UUID(int=0x404)), "not-a-uuid", "42"])
def test_unknown_or_malformed_product_is_404_json(api, product_id):
    ProductFactory()
    response = api.get(f"/api/products/{product_id}/")
    assert response.status_code == 404
    assert response.json() == {"detail": f"product {product_id} does not exist"}


def test_product_pages_cost_the_same_whatever_their_size(api, django_assert_max_num_queries):
    def build(n: int) -> Product:
        product = ProductFactory()
        blocks = []
        for _ in range(n):
            block = ProductBlockFactory()
            block.resource_types.set([ResourceTypeFactory(), ResourceTypeFactory()])
            ProductBlockRelationFactory(in_use_by=block)
            blocks.append(block)
            FixedInputFactory(product=product)
            WorkflowFactory(products=[product])
        product.product_blocks.set(blocks)
        return product

    small, large = build(1), build(10)
    detail_small = count_queries(lambda: api.get(f"/api/products/{small.product_id}/"))
    with django_assert_max_num_queries(detail_small):
        assert len(api.get(f"/api/products/{large.product_id}/").json()["product_blocks"]) == 10
    # product, fixed inputs, blocks, their resource types, their relations, workflows
    assert detail_small <= 6

    list_small = count_queries(lambda: api.get("/api/products/?limit=500"))
    ProductFactory.create_batch(30)
    with django_assert_max_num_queries(list_small):
        assert len(api.get("/api/products/?limit=500").json()["results"]) == 2 + 30
    assert list_small <= 2  # count and page


# --- subscription list ---------------------------------------------------------------------------
def test_subscription_list_fields(api):
    product = ProductFactory(name="Fibre")
    subscription = SubscriptionFactory(
        product=product, description="Amsterdam uplink", customer_id="acme", note="call first", lifecycle="active",
    )
    response = api.get("/api/subscriptions/")
    assert response.status_code == 200
    [item] = response.json()["results"]
    assert set(item) == LIST_FIELDS
    assert item == {
        "id": str(subscription.subscription_id),
        "description": "Amsterdam uplink",
        "product": {"id": str(product.product_id), "name": "Fibre"},
        "customer_id": "acme",
        "status": "active",
        "insync": True,
        "start_date": item["start_date"],
        "end_date": None,
        "note": "call first",
        "version": subscription.version,
    }
    assert dt.datetime.fromisoformat(item["start_date"]) == subscription.start_date


def test_subscription_filters(api):
    fibre, copper = ProductFactory(), ProductFactory()
    active = SubscriptionFactory(product=fibre, customer_id="acme", lifecycle="active")
    disabled = SubscriptionFactory(product=fibre, customer_id="globex", lifecycle="disabled", insync=False)
    initial = SubscriptionFactory(product=copper, customer_id="acme")
    a, d, i = (str(s.subscription_id) for s in (active, disabled, initial))

    def found(**params: str) -> set[str]:
        return set(ids(api.get("/api/subscriptions/", params)))

    assert found(status="active") == {a}
    assert found(status="disabled") == {d}
    assert found(insync="false") == {d}
    assert found(insync="true") == {a, i}
    assert found(product=str(fibre.product_id)) == {a, d}
    assert found(product=str(copper.product_id)) == {i}
    assert found(product=str(uuid.uuid4())) == set()
    assert found(customer_id="acme") == {a, i}
    assert found(customer_id="acm") == set()  # exact, not a search
    assert found(customer_id="acme", status="initial", product=str(copper.product_id)) == {i}


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "sleeping"}, "status"), ({"product": "not-a-uuid"}, "product"), ({"customer_id": "a\x00b"},
                                                                                  "customer_id")],
)
def test_invalid_filter_values_are_400_with_field_errors(api, params, field):
    response = api.get("/api/subscriptions/", params)
    assert response.status_code == 400
    body = response.json()
    assert set(body["errors"]) == {field}
    assert field in body["detail"]


@pytest.fixture
def searchable(db) -> dict[str, Subscription]:
    # Fixed ids, so a prefix of one is known not to be a prefix of the other.
    return {
        "target": SubscriptionFactory(
            subscription_id=uuid.UUID("abcdef12-3456-4789-8abc-def012345678"),
            description="Amsterdam uplink", customer_id="acme-corp", lifecycle="active",
        ),
        "neighbour": SubscriptionFactory(
            subscription_id=uuid.UUID("abcdef13-0000-4000-8000-000000000000"),
            description="Rotterdam port", customer_id="globex", lifecycle="active",
        ),
        "other": SubscriptionFactory(
            subscription_id=uuid.UUID("12345678-0000-4000-8000-000000000000"),
            description="Utrecht link", customer_id="initech",
        ),
    }


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("uplink", ["target"]),  # a word of the description
        ("AMSTERDAM", ["target"]),  # case-insensitive
        ("acme", ["target"]),  # customer id
        ("dam", ["target", "neighbour"]),  # Amsterdam, Rotterdam
        ("rotterdam globex", ["neighbour"]),  # every word must match
        ("abcdef12-3456-4789-8abc-def012345678", ["target"]),  # the whole id
        ("ABCDEF12-3456-4789-8ABC-DEF012345678", ["target"]),
        ("abcdef1234564789", ["target"]),  # hex digits without dashes
        ("abcdef12", ["target"]),  # the 8-digit prefix the admin shows
        ("abcdef12…", ["target"]),  # ... with its ellipsis
        ("abcdef12-3456", ["target"]),
        ("abcdef1", []),  # 7 digits: too short to be taken for an id
        ("abcdef", []),
        ("12345678", ["other"]),
        ("nowhere", []),
    ],
)
def test_subscription_search(api, searchable, term, expected):
    found = ids(api.get("/api/subscriptions/", {"search": term}))
    assert sorted(found) == sorted(str(searchable[name].subscription_id) for name in expected)


def test_search_by_id_keeps_the_other_filters(api, searchable):
    target = str(searchable["target"].subscription_id)
    assert ids(api.get("/api/subscriptions/", {"search": target, "status": "active"})) == [target]
    assert ids(api.get("/api/subscriptions/", {"search": target, "status": "initial"})) == []
    assert ids(api.get("/api/subscriptions/", {"search": "abcdef12", "customer_id": "globex"})) == []


def test_subscription_ordering(api):
    t0 = timezone.now().replace(microsecond=0)
    first = SubscriptionFactory(start_date=t0, customer_id="c-b", description="b link", lifecycle="active")
    second = SubscriptionFactory(start_date=t0 + dt.timedelta(days=1), customer_id="c-c", description="c link",
                                 lifecycle="terminated")
    third = SubscriptionFactory(start_date=t0 + dt.timedelta(days=2), customer_id="c-a", description="a link",
                                lifecycle="disabled")
    f, s, t = (str(x.subscription_id) for x in (first, second, third))

    def ordered(ordering: str | None) -> list[str]:
        return ids(api.get("/api/subscriptions/", {"ordering": ordering} if ordering else {}))

    assert ordered(None) == [t, s, f]  # newest first
    assert ordered("start_date") == [f, s, t]
    assert ordered("-start_date") == [t, s, f]
    assert ordered("customer_id") == [t, f, s]
    assert ordered("-customer_id") == [s, f, t]
    assert ordered("description") == [t, f, s]
    assert ordered("status") == [f, t, s]  # active, disabled, terminated
    assert ordered("-status,customer_id") == [s, t, f]
    assert ordered("note") == [t, s, f]  # not an ordering field: ignored


def test_pages_of_tied_rows_neither_repeat_nor_skip(api):
    # Created with falling ids: rows tied on the ordering come back by id, whatever order they were written in.
    tied = [SubscriptionFactory(subscription_id=uuid.UUID(int=n), customer_id="same") for n in range(7, 0, -1)]
    earlier = SubscriptionFactory(customer_id="earlier")
    seen: list[str] = []
    for offset in range(0, 8, 2):
        seen += ids(api.get("/api/subscriptions/", {"ordering": "customer_id", "limit": 2, "offset": offset}))
    assert seen == [str(earlier.subscription_id), *sorted(str(s.subscription_id) for s in tied)]


def test_pagination(api, settings):
    created = [SubscriptionFactory(start_date=timezone.now() - dt.timedelta(hours=n)) for n in range(5)]
    expected = [str(s.subscription_id) for s in created]  # newest start date first

    page = api.get("/api/subscriptions/", {"limit": 2}).json()
    assert page["count"] == 5
    assert [item["id"] for item in page["results"]] == expected[:2]
    assert page["previous"] is None
    assert "limit=2" in page["next"] and "offset=2" in page["next"]

    last = api.get("/api/subscriptions/", {"limit": 2, "offset": 4}).json()
    assert [item["id"] for item in last["results"]] == expected[4:]
    assert last["next"] is None
    assert last["previous"] is not None

    settings.ORCHESTRATOR = {"API_MAX_PAGE_SIZE": 3}
    capped = api.get("/api/subscriptions/", {"limit": 1000}).json()
    assert capped["count"] == 5
    assert len(capped["results"]) == 3
    assert capped["next"] is not None


def test_subscription_list_costs_the_same_whatever_the_page_size(api, django_assert_max_num_queries):
    SubscriptionFactory.create_batch(3, lifecycle="active")
    small = count_queries(lambda: api.get("/api/subscriptions/", {"limit": 100}))
    SubscriptionFactory.create_batch(27, lifecycle="active")
    with django_assert_max_num_queries(small):
        assert len(api.get("/api/subscriptions/", {"limit": 100}).json()["results"]) == 30
    assert small <= 2  # count and page (the product joined in)


# --- subscription detail -------------------------------------------------------------------------
def test_subscription_detail(api, catalogue):
    subscription = make_node(catalogue)
    process_id = uuid.uuid4()
    subscription.disable(by="bob", process_id=process_id)
    subscription.save()
    older = ProcessSubscriptionFactory(
        subscription=subscription,
        process=ProcessFactory(workflow=WorkflowFactory(name="create_test"), status="completed",
                               last_step="Done", started_at=timezone.now() - dt.timedelta(days=1)),
    ).process
    newer = ProcessSubscriptionFactory(
        subscription=subscription,
        process=ProcessFactory(workflow=WorkflowFactory(name="modify_test"), status="failed", last_step="Push"),
    ).process
    ProcessSubscriptionFactory(process=ProcessFactory())  # on another subscription

    response = api.get(detail_url(subscription))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == DETAIL_FIELDS
    assert body["id"] == str(subscription.subscription_id)
    assert body["product"] == {"id": str(catalogue["Node"].product_id), "name": "Node"}
    assert body["status"] == "disabled"
    assert body["version"] == subscription.version == 2

    node = body["domain_model"]["node"]
    assert node["node_name"] == "rtr-1"
    assert node["node_role"] == "core"
    assert node["inventory_id"] == 42
    assert node["ipv4_loopback"] == "10.0.0.1"
    assert body["domain_model"] == NodeProduct.load(subscription.subscription_id).to_dict()
    assert body["domain_model_error"] is None

    history = body["lifecycle_history"]
    assert [(e["transition"], e["from_status"], e["to_status"]) for e in history] == [
        ("provision", "initial", "provisioning"),
        ("activate", "provisioning", "active"),
        ("disable", "active", "disabled"),
    ]
    assert [e["changed_by"] for e in history] == ["alice", "alice", "bob"]
    assert [e["process_id"] for e in history] == [None, None, str(process_id)]
    assert all(dt.datetime.fromisoformat(e["changed_at"]) for e in history)

    assert body["processes"] == [
        {
            "process_id": str(newer.process_id),
            "workflow": "modify_test",
            "status": "failed",
            "started_at": body["processes"][0]["started_at"],
            "last_step": "Push",
        },
        {
            "process_id": str(older.process_id),
            "workflow": "create_test",
            "status": "completed",
            "started_at": body["processes"][1]["started_at"],
            "last_step": "Done",
        },
    ]
    assert dt.datetime.fromisoformat(body["processes"][1]["started_at"]) == older.started_at


def test_subscription_without_a_domain_model_shows_null(api):
    subscription = SubscriptionFactory(product=ProductFactory(product_type="NoModelForThis"), lifecycle="active")
    body = api.get(detail_url(subscription)).json()
    assert body["domain_model"] is None
    assert body["domain_model_error"] is None
    assert body["id"] == str(subscription.subscription_id)


def test_subscription_whose_values_do_not_fit_its_model_still_shows(api, catalogue):
    subscription = make_node(catalogue)
    SubscriptionInstanceValue.objects.filter(
        subscription_instance__subscription=subscription, resource_type__resource_type="inventory_id"
    ).update(value="forty-two")

    response = api.get(detail_url(subscription))

    assert response.status_code == 200
    body = response.json()
    assert body["domain_model"] is None
    assert "inventory_id" in body["domain_model_error"]
    assert "forty-two" in body["domain_model_error"]
    assert len(body["lifecycle_history"]) == 2


@pytest.mark.parametrize("subscription_id", [str(uuid.UUID(int=0x404)), "not-a-uuid", "abcdef12", "0"])
def test_unknown_or_malformed_subscription_is_404_json(api, subscription_id):
    SubscriptionFactory()
    response = api.get(f"/api/subscriptions/{subscription_id}/")
    assert response.status_code == 404
    assert response.json() == {"detail": f"subscription {subscription_id} does not exist"}


def test_subscription_detail_costs_the_same_whatever_its_history(api, catalogue, django_assert_max_num_queries):
    def build(n: int) -> Subscription:
        subscription = make_node(catalogue, f"rtr-{n}", status="provisioning")  # 1 lifecycle event
        subscription.activate()
        subscription.save()
        for step in range(n - 2):  # each toggle: one more event
            subscription.disable() if step % 2 == 0 else subscription.enable()
            subscription.save()
        ProcessSubscriptionFactory.create_batch(n, subscription=subscription)
        return subscription

    small, large = build(2), build(10)
    assert small.lifecycle_events.count() == 2 and large.lifecycle_events.count() == 10

    queries = count_queries(lambda: api.get(detail_url(small)))
    with django_assert_max_num_queries(queries):
        body = api.get(detail_url(large)).json()
    assert len(body["lifecycle_history"]) == 10
    assert len(body["processes"]) == 10
    assert body["domain_model"]["node"]["node_name"] == "rtr-10"
    # ETag, subscription with product, history, processes, and the domain model's three reads.
    assert queries <= 7


# --- ETag ----------------------------------------------------------------------------------------
def test_etag_and_304(api, django_assert_num_queries):
    subscription = SubscriptionFactory(lifecycle="active")
    first = api.get(detail_url(subscription))
    tag = first.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert api.get(detail_url(subscription)).headers["ETag"] == tag  # stable while nothing changes

    with django_assert_num_queries(1):  # the tag's query only: nothing of the page is built
        not_modified = api.get(detail_url(subscription), HTTP_IF_NONE_MATCH=tag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == tag

    assert api.get(detail_url(subscription), HTTP_IF_NONE_MATCH=f"W/{tag}").status_code == 304
    assert api.get(detail_url(subscription), HTTP_IF_NONE_MATCH=f'"other", {tag}').status_code == 304
    assert api.get(detail_url(subscription), HTTP_IF_NONE_MATCH="*").status_code == 304
    stale = api.get(detail_url(subscription), HTTP_IF_NONE_MATCH='"something-else"')
    assert stale.status_code == 200
    assert stale.json()["id"] == str(subscription.subscription_id)


def test_etag_changes_with_the_subscription_and_its_processes(api):
    subscription = SubscriptionFactory(lifecycle="active")

    def tag() -> str:
        return api.get(detail_url(subscription)).headers["ETag"]

    seen = [tag()]
    subscription.note = "changed"
    subscription.save()  # a new version
    seen.append(tag())
    link = ProcessSubscriptionFactory(subscription=subscription)  # a process started on it
    seen.append(tag())
    Process.objects.filter(pk=link.process_id).update(last_modified_at=timezone.now() + dt.timedelta(seconds=5))
    seen.append(tag())  # the process moved on
    assert len(set(seen)) == len(seen)

    assert api.get(detail_url(subscription), HTTP_IF_NONE_MATCH=seen[0]).status_code == 200
    assert api.get(detail_url(subscription), HTTP_IF_NONE_MATCH=seen[-1]).status_code == 304


def test_etag_never_answers_anonymous_clients(api):
    subscription = SubscriptionFactory()
    tag = api.get(detail_url(subscription)).headers["ETag"]
    response = APIClient().get(detail_url(subscription), HTTP_IF_NONE_MATCH=tag)
    assert response.status_code == 401
    assert "ETag" not in response.headers


def test_list_has_no_etag(api):
    SubscriptionFactory()
    assert "ETag" not in api.get("/api/subscriptions/").headers


# --- OpenAPI schema ------------------------------------------------------------------------------
# The lifecycle choice sets share field names ("status") with the processes' own; these names keep
# the generated enums apart (the site's SPECTACULAR_SETTINGS should carry the same entries).
ENUM_NAMES = {
    "SubscriptionLifecycleEnum": "subscriptions.lifecycle.SubscriptionLifecycle",
    "ProductLifecycleEnum": "subscriptions.models.ProductLifecycle",
}


def test_schema_of_these_views_is_valid_and_warning_free():
    overrides = {**spectacular_settings.ENUM_NAME_OVERRIDES, **ENUM_NAMES}
    GENERATOR_STATS.reset()
    try:
        with patched_settings({"ENUM_NAME_OVERRIDES": overrides}):
            _load_enum_name_overrides.cache_clear()  # cached per language, across settings
            generator = SchemaGenerator(patterns=[path("api/", include("subscriptions.api.urls"))])
            schema = generator.get_schema(request=None, public=True)
        warnings = dict(GENERATOR_STATS._warn_cache)
        errors = dict(GENERATOR_STATS._error_cache)
    finally:
        _load_enum_name_overrides.cache_clear()
        GENERATOR_STATS.reset()
    validate_schema(schema)
    assert warnings == {}
    assert errors == {}
    assert set(schema["paths"]) == {
        "/api/products/", "/api/products/{id}/", "/api/subscriptions/", "/api/subscriptions/{id}/",
        "/api/subscriptions/{id}/relations/",
    }
    for url in ("/api/products/{id}/", "/api/subscriptions/{id}/"):
        assert set(schema["paths"][url]) == {"get"}
        [param] = [p for p in schema["paths"][url]["get"]["parameters"] if p["in"] == "path"]
        assert param["schema"] == {"type": "string", "format": "uuid"}
    list_params = {p["name"] for p in schema["paths"]["/api/subscriptions/"]["get"]["parameters"]}
    assert list_params == {"status", "insync", "product", "customer_id", "search", "ordering", "limit", "offset"}
    detail = schema["components"]["schemas"]["SubscriptionDetail"]["properties"]
    assert detail["domain_model"]["nullable"] is True
    assert set(schema["paths"]["/api/subscriptions/{id}/"]["get"]["responses"]) == {"200", "304", "401", "404"}
    # A malformed filter value is answered 400, and the schema says so (the fuzz test holds us to it).
    assert set(schema["paths"]["/api/subscriptions/"]["get"]["responses"]) == {"200", "400", "401"}
