"""The engine's API: health, the pause switch, the workflows a subscription may start, and the open docs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from processes import health
from processes.engine_settings import engine_status, pause_engine, resume_engine, set_engine_paused
from processes.models import EngineSettings, Process, ProcessLease, ProcessStatus
from processes.services import start_process
from subscriptions.models import Product
from tests.factories import SubscriptionFactory, UserFactory, api_token
from workflows.registry import get_workflow
from workflows.sync import workflow_row

ENGINE = "/api/settings/engine/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


@pytest.fixture
def plain_api(db) -> APIClient:
    return client_for(UserFactory(username="plain"))


@pytest.fixture
def staff_api(db) -> APIClient:
    return client_for(UserFactory(username="boss", is_staff=True))


def running_process() -> Process:
    # A process a worker is in the middle of: what keeps a paused engine "pausing".
    process = Process.objects.create(
        workflow=workflow_row(get_workflow("task_check_products")), status=ProcessStatus.RUNNING, created_by="test"
    )
    # A run in progress holds the process's lease: that is what the engine counts as running.
    ProcessLease.objects.create(process=process, owner="test-run", expires_at=timezone.now() + timedelta(minutes=5))
    return process


# --- health ------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_health_needs_no_authentication_and_ignores_bad_credentials():
    anonymous = APIClient().get("/api/health/")
    bad_token = APIClient(HTTP_AUTHORIZATION="Token nonsense").get("/api/health/")

    for response in (anonymous, bad_token):
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": "ok", "engine": "running", "scheduler": "stale",
                                   "scheduler_required": False, "scheduler_last_tick_at": None,
                                   "broker": "not_used"}
        assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_health_reports_a_pausing_then_paused_engine():
    pause_engine(by="ops")
    process = running_process()
    assert APIClient().get("/api/health/").json()["engine"] == "pausing"

    Process.objects.filter(pk=process.pk).delete()
    assert APIClient().get("/api/health/").json()["engine"] == "paused"


@pytest.mark.django_db
def test_health_is_503_when_the_database_is_unreachable(monkeypatch):
    def unreachable() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(health, "check_database", unreachable)

    response = APIClient().get("/api/health/")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "engine": "unknown",
                               "scheduler": "unknown", "scheduler_required": False, "scheduler_last_tick_at": None,
                               "broker": "not_used"}


# --- engine settings: permissions ----------------------------------------------------------------------
@pytest.mark.django_db
def test_anonymous_users_get_401_for_reading_and_changing_the_engine():
    for response in (APIClient().get(ENGINE), APIClient().put(ENGINE, {"paused": True}, format="json")):
        assert response.status_code == 401
        assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert not EngineSettings.objects.filter(paused=True).exists()


def test_a_plain_user_may_read_the_engine_but_not_pause_it(plain_api):
    read = plain_api.get(ENGINE)
    refused = plain_api.put(ENGINE, {"paused": True}, format="json")

    assert read.status_code == 200
    assert read.json() == {
        "paused": False, "status": "running", "running_processes": 0, "changed_by": "", "changed_at": None,
    }
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only staff may pause or resume the engine."}
    assert engine_status().paused is False


# --- engine settings: pausing and resuming -------------------------------------------------------------
def test_staff_pause_and_resume_the_engine_and_who_and_when_are_recorded(staff_api):
    paused = staff_api.put(ENGINE, {"paused": True}, format="json")

    assert paused.status_code == 200
    body = paused.json()
    assert body["paused"] is True and body["status"] == "paused" and body["running_processes"] == 0
    assert body["changed_by"] == "boss" and body["changed_at"]
    row = EngineSettings.objects.get(id=1)
    assert row.paused is True and row.changed_by == "boss"
    assert staff_api.get(ENGINE).json() == body

    resumed = staff_api.put(ENGINE, {"paused": False}, format="json").json()

    assert resumed["paused"] is False and resumed["status"] == "running"
    assert EngineSettings.objects.get(id=1).paused is False


def test_a_paused_engine_with_a_running_process_is_pausing_until_none_runs(staff_api):
    process = running_process()
    assert staff_api.get(ENGINE).json()["status"] == "running"

    body = staff_api.put(ENGINE, {"paused": True}, format="json").json()

    assert body == {**body, "paused": True, "status": "pausing", "running_processes": 1}
    Process.objects.filter(pk=process.pk).delete()
    assert staff_api.get(ENGINE).json() == {**body, "paused": True, "status": "paused", "running_processes": 0}


def test_the_staff_session_of_the_admin_works_too(staff_client):
    # Session auth enforces CSRF; the test client skips the check, as a browser form would pass it.
    response = staff_client.put(ENGINE, {"paused": True}, content_type="application/json")

    assert response.status_code == 200 and response.json()["paused"] is True


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"paused": ["This field is required."]}),
        ({"paused": "yes"}, {"paused": ["Must be a JSON boolean (true or false)."]}),
        ({"paused": 1}, {"paused": ["Must be a JSON boolean (true or false)."]}),
        ({"paused": None}, {"paused": ["This field may not be null."]}),
        ({"paused": True, "reason": "x"}, {"reason": ["unknown field; expected one of: paused"]}),
        ({"pause": True}, {"pause": ["unknown field; expected one of: paused"], "paused": ["This field is required."]}),
        ([True], {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
)
def test_a_bad_body_is_400_with_field_errors_and_changes_nothing(staff_api, body, errors):
    response = staff_api.put(ENGINE, body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert response.json()["detail"].startswith("invalid input (")
    assert engine_status().paused is False


def test_malformed_json_is_400_and_another_content_type_is_415(staff_api):
    malformed = staff_api.put(ENGINE, "{paused: true", content_type="application/json")
    form = staff_api.put(ENGINE, "paused=true", content_type="application/x-www-form-urlencoded")

    assert malformed.status_code == 400 and malformed.json()["detail"].startswith("JSON parse error")
    assert form.status_code == 415
    assert form.json() == {"detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.'}


def test_other_methods_are_405(staff_api):
    response = staff_api.post(ENGINE, {"paused": True}, format="json")

    assert response.status_code == 405 and response.json() == {"detail": 'Method "POST" not allowed.'}


# --- the service -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_setting_the_same_value_again_keeps_who_changed_it_last():
    pause_engine(by="alice")
    first = EngineSettings.objects.get(id=1).changed_at

    status = set_engine_paused(True, by="bob")

    row = EngineSettings.objects.get(id=1)
    assert row.changed_by == "alice" and row.changed_at == first
    assert status.changed_by == "alice" and status.status == "paused"
    assert resume_engine().changed_by == "system"  # no user: the system actor


@pytest.mark.django_db
def test_reading_the_status_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(2):
        status = engine_status()

    assert status.status == "running" and status.changed_at is None
    assert not EngineSettings.objects.exists()


# --- the workflows a subscription may start --------------------------------------------------------------
def by_name(response) -> dict[str, dict]:
    return {item["name"]: item for item in response.json()}


@pytest.mark.django_db(transaction=True)
def test_the_workflows_of_an_active_subscription_are_allowed(active_node, plain_api):
    response = plain_api.get(f"/api/subscriptions/{active_node.pk}/workflows/")

    assert response.status_code == 200
    items = by_name(response)
    assert {"modify_node", "terminate_node", "validate_node", "modify_note"} <= set(items)
    assert "create_node" not in items and "task_check_products" not in items
    assert items["modify_node"] == {
        "name": "modify_node", "target": "modify", "description": "Modify node", "allowed": True, "reasons": [],
        "locked_relations": [], "in_use_by": [],
    }


@pytest.mark.django_db(transaction=True)
def test_an_out_of_sync_subscription_names_the_process_holding_it(active_node, plain_api):
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    assert holder.status == "suspended"  # past unsync, waiting for input

    items = by_name(plain_api.get(f"/api/subscriptions/{active_node.pk}/workflows/"))

    assert items["modify_node"]["allowed"] is False
    assert items["modify_node"]["reasons"] == [
        f"subscription {active_node.pk} is out of sync "
        f"(process {holder.process_id} (modify_node, suspended) is running on it)"
    ]
    assert items["terminate_node"]["allowed"] is False
    # Declared usable while out of sync: still allowed.
    assert items["modify_note"] == {**items["modify_note"], "allowed": True, "reasons": []}


@pytest.mark.django_db
def test_a_lifecycle_status_the_workflow_does_not_allow_is_a_reason(catalogue, plain_api):
    terminated = SubscriptionFactory(product=Product.objects.get(name="Node"), lifecycle="terminated")

    items = by_name(plain_api.get(f"/api/subscriptions/{terminated.pk}/workflows/"))

    assert items["modify_node"]["allowed"] is False
    assert items["modify_node"]["reasons"] == [
        f"subscription {terminated.pk} is terminated; modify_node may start only on active subscriptions"
    ]
    assert items["modify_note"]["allowed"] is True


@pytest.mark.django_db
@pytest.mark.parametrize("subscription_id", ["6f1c7a52-3b8e-4e8a-9a57-0c1d2e3f4a5b", "not-a-uuid", "0"])
def test_an_unknown_or_malformed_subscription_is_404(plain_api, subscription_id):
    response = plain_api.get(f"/api/subscriptions/{subscription_id}/workflows/")

    assert response.status_code == 404
    assert response.json() == {"detail": f"subscription {subscription_id} does not exist"}


@pytest.mark.django_db
def test_the_workflows_of_a_subscription_need_authentication(catalogue):
    subscription = SubscriptionFactory(product=Product.objects.get(name="Node"))

    response = APIClient().get(f"/api/subscriptions/{subscription.pk}/workflows/")

    assert response.status_code == 401


# --- schema and docs ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_schema_and_docs_are_open_to_anonymous_users():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = APIClient().get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/health/", "/api/settings/engine/", "/api/workflows/", "/api/workflows/{name}/",
                 "/api/subscriptions/{id}/workflows/"):
        assert path in paths
    assert "security" not in paths["/api/health/"]["get"]
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
