"""The workflows API: list with filters and pagination, detail with the input form as JSON Schema."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from subscriptions.models import Product
from tests.factories import UserFactory, api_token
from workflows.models import Workflow
from workflows.node.demo import load_demo_products
from workflows.registry import all_workflows
from workflows.sync import sync_workflows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def catalogue():
    load_demo_products()
    # The rows link products by product type: link the demo products just loaded.
    sync_workflows()


@pytest.fixture
def api() -> APIClient:
    user = UserFactory(username="reader")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def names(response) -> list[str]:
    return [item["name"] for item in response.json()["results"]]


def test_anonymous_requests_get_401_as_json_with_the_token_challenge():
    for url in ("/api/workflows/", "/api/workflows/create_node/"):
        response = APIClient().get(url)

        assert response.status_code == 401
        assert response.json() == {"detail": "Authentication credentials were not provided."}
        assert response["WWW-Authenticate"] == "Token"


def test_a_bad_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get("/api/workflows/")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def listed() -> dict:
    """The workflows the list shows: all in code but the branches of parallel steps (run only inside theirs)."""
    return {name: spec for name, spec in all_workflows().items() if not spec.branch_of}


def test_the_list_holds_every_workflow_in_code_with_its_products(api):
    node = Product.objects.get(name="Node")

    response = api.get("/api/workflows/", {"limit": 500})

    assert response.status_code == 200
    body = response.json()
    assert names(response) == sorted(listed())
    assert body["count"] == len(listed())
    items = {item["name"]: item for item in body["results"]}
    assert items["create_node"] == {
        "name": "create_node",
        "target": "create",
        "description": "Create node",
        "is_task": False,
        "products": [str(node.pk)],
        "usable_while_out_of_sync": False,
    }
    assert items["modify_note"]["usable_while_out_of_sync"] is True


def test_a_plain_user_and_a_session_login_may_read(staff_client):
    assert staff_client.get("/api/workflows/").status_code == 200
    assert staff_client.get("/api/workflows/create_node/").status_code == 200


def test_soft_deleted_rows_and_rows_the_code_no_longer_declares_are_left_out(api):
    Workflow.objects.create(name="gone_from_code", target="modify", description="Gone", deleted_at=timezone.now())
    Workflow.objects.create(name="not_synced_yet", target="modify", description="Not in code")
    Workflow.objects.filter(name="modify_node").update(deleted_at=timezone.now())

    listed = names(api.get("/api/workflows/", {"limit": 500}))

    assert "gone_from_code" not in listed and "not_synced_yet" not in listed
    assert "modify_node" not in listed
    assert "create_node" in listed


def test_filters_by_target_product_and_task(api):
    node = Product.objects.get(name="Node")
    port = Product.objects.get(name="Port 10G")
    specs = listed()

    assert names(api.get("/api/workflows/", {"target": "create", "limit": 500})) == sorted(
        name for name, spec in specs.items() if spec.target == "create"
    )
    serving_nodes = names(api.get("/api/workflows/", {"product": str(node.pk), "limit": 500}))
    assert serving_nodes == sorted(name for name, spec in specs.items() if "Node" in spec.product_types)
    assert {"create_node", "modify_node", "terminate_node", "validate_node"} <= set(serving_nodes)
    serving_ports = names(api.get("/api/workflows/", {"product": str(port.pk), "limit": 500}))
    assert serving_ports == sorted(name for name, spec in specs.items() if "Port" in spec.product_types)
    assert {"create_port", "modify_port", "terminate_port"} <= set(serving_ports)
    assert "modify_node" not in serving_ports
    tasks = names(api.get("/api/workflows/", {"is_task": "true", "limit": 500}))
    assert tasks == sorted(name for name, spec in specs.items() if spec.is_task) and tasks
    not_tasks = names(api.get("/api/workflows/", {"is_task": "false", "limit": 500}))
    assert set(tasks).isdisjoint(not_tasks) and len(tasks) + len(not_tasks) == len(specs)
    assert names(api.get("/api/workflows/", {"target": "create", "product": str(node.pk)})) == ["create_node"]


def test_bad_filter_values_are_400_with_field_errors(api):
    response = api.get("/api/workflows/", {"target": "explode", "product": "not-a-uuid"})

    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("invalid input (")
    assert body["errors"]["target"] == ["Select a valid choice. explode is not one of the available choices."]
    assert body["errors"]["product"] == ["Enter a valid UUID."]


def test_the_list_is_paginated(api):
    first = api.get("/api/workflows/", {"limit": 2}).json()
    second = api.get("/api/workflows/", {"limit": 2, "offset": 2}).json()

    assert first["count"] == len(listed())
    assert [item["name"] for item in first["results"] + second["results"]] == sorted(listed())[:4]
    assert "offset=2" in first["next"] and first["previous"] is None


def test_the_list_runs_the_same_few_queries_whatever_the_page_size(api, django_assert_num_queries):
    # Token and user, the rows, their products.
    with django_assert_num_queries(3):
        assert len(api.get("/api/workflows/", {"limit": 1}).json()["results"]) == 1
    with django_assert_num_queries(3):
        assert len(api.get("/api/workflows/", {"limit": 500}).json()["results"]) == len(listed())


def test_the_detail_has_the_input_form_as_json_schema_the_steps_and_statuses(api, django_assert_num_queries):
    node = Product.objects.get(name="Node")

    # Token and user, the row, its products; the product choices of the form.
    with django_assert_num_queries(4):
        response = api.get("/api/workflows/create_node/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "create_node" and body["target"] == "create" and body["products"] == [str(node.pk)]
    assert body["steps"] == [
        "Start", "Create subscription", "Link subscription to process", "Construct node model",
        "Allocate loopback in IPAM", "Deploy node configuration", "Set subscription active", "Resync", "Done",
    ]
    assert body["allowed_statuses"] == []
    form = body["initial_input_form"]
    assert form["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert form["type"] == "object" and form["additionalProperties"] is False
    assert list(form["properties"])[:3] == ["product", "customer_id", "description"]
    assert form["properties"]["product"]["oneOf"] == [{"const": str(node.pk), "title": "Node"}]
    assert {"product", "customer_id"} <= set(form["required"])


def test_the_detail_of_a_workflow_without_a_form_has_an_empty_object_schema(api):
    body = api.get("/api/workflows/modify_node/").json()

    assert body["initial_input_form"]["properties"] == {} and body["initial_input_form"]["required"] == []
    assert body["allowed_statuses"] == ["active"]
    assert body["steps"][:4] == ["Start", "Link subscription to process", "Unsync", "Ask for the new node name"]


def test_an_unknown_workflow_is_404_naming_the_known_ones(api):
    response = api.get("/api/workflows/no_such_flow/")

    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail.startswith("unknown workflow 'no_such_flow'; known workflows: ")
    assert "create_node" in detail
    assert set(response.json()) == {"detail"}
