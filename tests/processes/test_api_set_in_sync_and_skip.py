"""Set-in-sync and skip over the API: the admin's rules (the same services), their refusals, and the schema."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from processes.models import EngineSettings, Process, ProcessStep
from processes.services import abort_process, start_process
from subscriptions.models import Subscription, SubscriptionLifecycleEvent
from tests.factories import UserFactory
from tests.processes import flows
from tests.processes.conftest import log

pytestmark = pytest.mark.django_db(transaction=True)  # the inline executor runs processes after the commit


def client_for(user: object | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def runner(db):
    user = UserFactory(username="runner")
    user.user_permissions.add(Permission.objects.get(codename="run_process", content_type__app_label="processes"))
    return user


@pytest.fixture
def api(runner) -> APIClient:
    return client_for(runner)


def sync_url(subscription_id: object) -> str:
    return f"/api/subscriptions/{subscription_id}/set-in-sync/"


def skip_url(process_id: object) -> str:
    return f"/api/processes/{process_id}/skip/"


def sync_events(subscription: Subscription) -> list[tuple[str, str]]:
    return list(SubscriptionLifecycleEvent.objects.filter(subscription=subscription, transition="set in sync")
                .values_list("changed_by", "reason"))


@pytest.fixture
def stuck_node(active_node) -> Subscription:
    """Out of sync, and no process holds it: its modify_node process was aborted half-way."""
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    abort_process(holder.process_id, by="alice", reason="wrong node")
    return Subscription.objects.get(pk=active_node.pk)


def failed_process() -> Process:
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by="alice")
    assert process.status == "failed"
    return process


# --- who may -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [sync_url(uuid.uuid4()), skip_url(uuid.uuid4())], ids=["set-in-sync", "skip"])
def test_anonymous_requests_are_401_and_users_without_run_process_403(path, db):
    anonymous = APIClient().post(path, {"reason": "x"}, format="json")
    assert anonymous.status_code == 401

    refused = client_for(UserFactory(username="plain", is_staff=True)).post(path, {"reason": "x"}, format="json")
    assert refused.status_code == 403
    assert "processes.run_process" in refused.json()["detail"]


# --- set in sync -------------------------------------------------------------------------------------
def test_set_in_sync_records_who_and_why_and_answers_the_subscription(api, stuck_node):
    assert stuck_node.insync is False

    response = api.post(sync_url(stuck_node.pk), {"reason": "checked the router by hand"}, format="json")

    assert response.status_code == 200
    body = response.json()
    stored = Subscription.objects.get(pk=stuck_node.pk)
    assert body["id"] == str(stuck_node.pk) and body["insync"] is True and body["version"] == stored.version
    assert stored.insync is True and stored.out_of_sync_since is None
    assert sync_events(stuck_node) == [("runner", "checked the router by hand")]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}], ids=["missing", "empty", "blank"])
def test_set_in_sync_without_a_reason_is_400(api, stuck_node, body):
    response = api.post(sync_url(stuck_node.pk), body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"reason": ["This field is required."]}
    assert Subscription.objects.get(pk=stuck_node.pk).insync is False and sync_events(stuck_node) == []


def test_set_in_sync_refuses_unknown_fields_and_a_reason_that_is_not_text(api, stuck_node):
    for body, field in (({"reason": "x", "force": True}, "force"), ({"reason": 5}, "reason")):
        response = api.post(sync_url(stuck_node.pk), body, format="json")
        assert response.status_code == 400 and field in response.json()["errors"]
    assert sync_events(stuck_node) == []


def test_set_in_sync_is_409_while_a_process_holds_the_subscription(api, active_node):
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")

    response = api.post(sync_url(active_node.pk), {"reason": "looked fine"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": f"cannot set subscription {active_node.pk} in sync: process "
                                         f"{holder.process_id} (modify_node, suspended) holds it; let it finish, "
                                         f"or abort it first"}
    assert Subscription.objects.get(pk=active_node.pk).insync is False and sync_events(active_node) == []


def test_set_in_sync_of_a_subscription_in_sync_is_409(api, active_node):
    response = api.post(sync_url(active_node.pk), {"reason": "why not"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": f"subscription {active_node.pk} is already in sync"}
    assert sync_events(active_node) == []


@pytest.mark.parametrize("subscription_id", ["6f1c7a52-3b8e-4e8a-9a57-0c1d2e3f4a5b", "not-a-uuid"])
def test_set_in_sync_of_an_unknown_subscription_is_404(api, subscription_id):
    response = api.post(sync_url(subscription_id), {"reason": "checked"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": f"subscription {subscription_id} does not exist"}


# --- skip ----------------------------------------------------------------------------------------------
def test_skip_logs_who_and_why_and_the_process_runs_on_to_its_end(api):
    process = failed_process()

    response = api.post(skip_url(process.process_id), {"reason": "done by hand in the CRM"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"id": str(process.process_id), "status": "completed"}
    assert log(process) == [("Start", "success"), ("Write A", "success"), ("Write B then maybe fail", "failed"),
                            ("Write B then maybe fail", "skipped"), ("Write C", "success"), ("Done", "complete")]
    skipped = ProcessStep.objects.get(process=process, status="skipped")
    assert (skipped.created_by, skipped.error) == ("runner", "skipped by runner: done by hand in the CRM")


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "  "}], ids=["missing", "empty", "blank"])
def test_skip_without_a_reason_is_400_and_changes_nothing(api, body):
    process = failed_process()

    response = api.post(skip_url(process.process_id), body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"reason": ["This field is required."]}
    assert Process.objects.get(pk=process.pk).status == "failed"
    assert not ProcessStep.objects.filter(process=process, status="skipped").exists()


def test_skip_of_a_process_whose_status_allows_none_is_409(api):
    suspended = start_process("t_input", by="alice")
    completed = start_process("t_writes", by="alice")

    for process in (suspended, completed):
        response = api.post(skip_url(process.process_id), {"reason": "why not"}, format="json")
        assert response.status_code == 409
        assert response.json()["detail"].startswith(
            f"cannot skip a step of process {process.process_id}: it is {process.status}; only the failed step")
    assert Process.objects.get(pk=suspended.pk).status == "suspended"


def test_skip_while_the_engine_is_paused_is_503(api):
    process = failed_process()
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})

    response = api.post(skip_url(process.process_id), {"reason": "why not"}, format="json")

    assert response.status_code == 503
    assert "the engine is paused" in response.json()["detail"]
    assert Process.objects.get(pk=process.pk).status == "failed"


@pytest.mark.parametrize("process_id", ["6f1c7a52-3b8e-4e8a-9a57-0c1d2e3f4a5b", "not-a-uuid"])
def test_skip_of_an_unknown_process_is_404(api, process_id):
    response = api.post(skip_url(process_id), {"reason": "why not"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": f"process {process_id} does not exist"}


# --- the schema ----------------------------------------------------------------------------------------
def test_both_actions_are_in_the_openapi_schema_with_their_answers(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()

    sync = schema["paths"]["/api/subscriptions/{id}/set-in-sync/"]["post"]
    skip = schema["paths"]["/api/processes/{id}/skip/"]["post"]
    assert set(sync["responses"]) == {"200", "400", "401", "403", "404", "409"}
    assert {"200", "400", "401", "403", "404", "409", "503"} <= set(skip["responses"])
    for operation in (sync, skip):
        body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert schema["components"]["schemas"][body]["required"] == ["reason"]
