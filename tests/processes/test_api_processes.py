"""The process API: start, list, show, resume, retry, abort, delete; permissions, errors, idempotency, ETags."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from processes import idempotency
from processes.models import (
    EngineSettings,
    IdempotencyKey,
    InputState,
    Process,
    ProcessStatus,
    ProcessStep,
    ProcessSubscription,
)
from processes.services import start_process
from processes.statelog import diff as state_delta
from subscriptions.models import Product, Subscription
from tests.factories import SubscriptionFactory, UserFactory, api_token
from tests.processes import flows
from workflows.dsl import begin
from workflows.node.products import NodeProduct
from workflows.registry import get_workflow, unregister, workflow
from workflows.sync import workflow_row

URL = "/api/processes/"
CREATE_NODE_INPUT = {"product": "Node", "customer_id": "acme", "node_name": "rt1", "node_role": "core",
                     "inventory_id": 7}
# The engine-test workflows run inside the POST, after its transaction commits: these tests need real commits.
runs = pytest.mark.django_db(transaction=True)


def detail(process_id: object) -> str:
    return f"{URL}{process_id}/"


def client_for(user: object | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def with_run_permission(**fields: object):
    user = UserFactory(**fields)
    user.user_permissions.add(Permission.objects.get(codename="run_process", content_type__app_label="processes"))
    return user


@pytest.fixture
def plain(db):
    return UserFactory(username="plain")


@pytest.fixture
def runner(db):
    return with_run_permission(username="runner")


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def api(runner) -> APIClient:
    return client_for(runner)


def pause_engine() -> None:
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})


def start(api: APIClient, workflow_name: str, *, subscription: object = None, data: dict | None = None,
          **headers: str):
    body = {"workflow": workflow_name, "subscription": str(subscription) if subscription else None,
            "input": data or {}}
    return api.post(URL, body, format="json", headers=headers or None)


# --- permissions -------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [
    ("get", URL), ("post", URL), ("get", detail(uuid.UUID(int=0x404))), ("get", f"{URL}status-counts/"),
    ("post", f"{detail(uuid.UUID(int=0x404))}resume/"), ("post", f"{detail(uuid.UUID(int=0x404))}retry/"),
    ("post", f"{detail(uuid.UUID(int=0x404))}abort/"), ("delete", detail(uuid.UUID(int=0x404))),
])
def test_anonymous_requests_are_refused_with_401(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


@runs
def test_a_plain_user_can_read_but_not_start_resume_retry_abort_or_delete(plain):
    process = start_process("t_input", by="someone")
    api = client_for(plain)

    assert api.get(URL).status_code == 200
    assert api.get(detail(process.process_id)).status_code == 200
    assert api.get(f"{URL}status-counts/").status_code == 200
    refusals = [
        start(api, "t_writes"),
        api.post(f"{detail(process.process_id)}resume/", {"input": {"colour": "red"}}, format="json"),
        api.post(f"{detail(process.process_id)}retry/", format="json"),
        api.post(f"{detail(process.process_id)}abort/", format="json"),
        api.delete(detail(process.process_id)),
    ]
    for response in refusals:
        assert response.status_code == 403
        assert "processes.run_process" in response.json()["detail"]
    assert Process.objects.get().status == "suspended"


@runs
def test_staff_without_the_permission_cannot_start_but_a_superuser_and_a_granted_user_can(runner, superuser):
    staff = UserFactory(username="staffer", is_staff=True)

    assert start(client_for(staff), "t_writes").status_code == 403
    assert start(client_for(superuser), "t_writes").status_code == 201
    assert start(client_for(runner), "t_writes").status_code == 201
    assert sorted(Process.objects.values_list("created_by", flat=True)) == ["root", "runner"]


@runs
def test_a_token_authenticates(runner):
    token = api_token(runner)
    api = APIClient()

    response = api.post(URL, {"workflow": "t_writes"}, format="json", headers={"Authorization": f"Token {token}"})

    assert response.status_code == 201
    assert Process.objects.get().created_by == "runner"


@pytest.fixture
def only_alice():
    """A workflow whose authorisation hook lets only alice start or retry it."""
    spec = workflow(
        "API test: only alice may start or retry", name="t_only_alice",
        authorize=lambda user, spec, subscription: user.username == "alice",
    )(lambda: begin >> flows.write_a >> flows.write_b_then_fail)
    yield spec
    unregister(spec.name)


@runs
def test_the_workflows_authorisation_hook_decides_who_may_start_and_retry_it(only_alice, runner):
    alice = with_run_permission(username="alice")

    refused = start(client_for(runner), "t_only_alice")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "you may not start t_only_alice"}
    assert not Process.objects.exists()

    flows.CONTROL["fail_times"] = 1
    started = start(client_for(alice), "t_only_alice")
    assert started.json()["status"] == "failed"
    retry = f"{detail(started.json()['id'])}retry/"
    refused = client_for(runner).post(retry, format="json")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "you may not retry t_only_alice"}
    assert client_for(alice).post(retry, format="json").json()["status"] == "completed"


# --- start -------------------------------------------------------------------------------------------
@runs
def test_start_runs_the_workflow_and_answers_201_with_its_id_and_status(api, catalogue):
    response = start(api, "create_node", data=CREATE_NODE_INPUT)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "status"}
    assert body["status"] == "completed"
    assert response.headers["Location"] == detail(body["id"])
    process = Process.objects.get(pk=body["id"])
    assert process.created_by == "runner"
    subscription = Subscription.objects.get(pk=ProcessSubscription.objects.get(process=process).subscription_id)
    assert (subscription.status, subscription.insync, subscription.customer_id) == ("active", True, "acme")


@runs
def test_start_refuses_unknown_keys_and_wrong_types_with_400_and_field_errors(api):
    unknown = api.post(URL, {"workflow": "t_writes", "colour": "red", "inputs": {}}, format="json")
    assert unknown.status_code == 400
    assert set(unknown.json()["errors"]) == {"colour", "inputs"}
    assert "unknown field; expected one of: workflow, subscription, input" in unknown.json()["errors"]["colour"][0]
    assert unknown.json()["detail"].startswith("invalid input (")

    wrong = api.post(URL, {"workflow": ["t_writes"], "input": "red"}, format="json")
    assert wrong.status_code == 400
    assert wrong.json()["errors"] == {"workflow": ["Must be a string, not an array."],
                                      "input": ['Expected a dictionary of items but got type "str".']}

    not_an_object = api.post(URL, ["t_writes"], format="json")
    assert not_an_object.status_code == 400
    assert "Expected a dictionary, but got list" in not_an_object.json()["detail"]

    missing = api.post(URL, {}, format="json")
    assert missing.status_code == 400
    assert missing.json()["errors"] == {"workflow": ["This field is required."]}
    assert not Process.objects.exists()


@runs
def test_start_refuses_input_the_workflows_form_refuses_with_400_and_its_field_errors(api, catalogue):
    response = start(api, "create_node", data={**CREATE_NODE_INPUT, "node_role": "spine", "inventory_id": "x",
                                               "colour": "red"})

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"node_role", "inventory_id", "colour"}
    assert errors["node_role"] == ['"spine" is not a valid choice.']
    assert errors["inventory_id"] == ["A valid integer is required."]
    assert errors["colour"][0].startswith("unknown field; expected one of: product, customer_id")
    assert response.json()["detail"].startswith("input for create_node: invalid input (")
    assert not Process.objects.exists()

    no_subscription = start(api, "modify_node")
    assert no_subscription.status_code == 400
    assert no_subscription.json() == {
        "detail": "cannot start modify_node: it works on a subscription; give the subscription's id",
        "errors": {"subscription": ["This field is required."]},
    }


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"workflow": 5}, "workflow", "Must be a string, not a number."),
        ({"workflow": ["t_writes"]}, "workflow", "Must be a string, not an array."),
        ({"workflow": {"a": 1}}, "workflow", "Must be a string, not an object."),
        ({"workflow": True}, "workflow", "Must be a string, not a boolean."),
        ({"workflow": None}, "workflow", "This field may not be null."),
        ({"workflow": "t_writes", "input": "text"}, "input", 'Expected a dictionary of items but got type "str".'),
        ({"workflow": "modify_node", "subscription": 5}, "subscription", "Must be a string, not a number."),
        ({"workflow": "modify_node", "subscription": [str(uuid.UUID(int=1))]}, "subscription",
         "Must be a string, not an array."),
    ],
    ids=["workflow-int", "workflow-list", "workflow-object", "workflow-bool", "workflow-null", "input-text",
         "subscription-int", "subscription-list"],
)
def test_start_refuses_a_field_of_the_wrong_json_type_with_a_400_field_error_not_a_404(api, body, field, message):
    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": f"invalid input ({field}: {message})", "errors": {field: [message]}}
    assert not Process.objects.exists()


def test_abort_refuses_a_reason_that_is_not_a_string(api):
    response = api.post(f"{detail(uuid.uuid4())}abort/", {"reason": 5}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"reason": ["Must be a string, not a number."]}


@runs
@pytest.mark.parametrize("inventory_id", [10**30, 2**63, 10**4000], ids=["10**30", "int64-max+1", "4001-digits"])
def test_start_refuses_an_integer_input_beyond_64_bits_naming_the_field(api, catalogue, inventory_id):
    response = start(api, "create_node", data={**CREATE_NODE_INPUT, "inventory_id": inventory_id})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "inventory_id": ["Ensure this value is less than or equal to 9223372036854775807."],
    }
    assert not Process.objects.exists()
    assert not Subscription.objects.exists()


@runs
def test_an_integer_input_at_the_64_bit_bound_runs_to_the_end(api, catalogue):
    response = start(api, "create_node", data={**CREATE_NODE_INPUT, "inventory_id": 2**63 - 1})

    assert response.status_code == 201
    assert response.json()["status"] == "completed"
    link = ProcessSubscription.objects.get(process_id=response.json()["id"])
    assert NodeProduct.load(link.subscription_id).node.inventory_id == 2**63 - 1
    schema = api.get("/api/workflows/create_node/").json()["initial_input_form"]["properties"]["inventory_id"]
    assert (schema["minimum"], schema["maximum"]) == (1, 2**63 - 1)


@runs
@pytest.mark.parametrize(("workflow_name", "subscription", "message"), [
    ("no_such_workflow", None, "unknown workflow 'no_such_workflow'; known workflows: "),
    ("modify_node", "00000000-0000-0000-0000-000000000001",
     "subscription 00000000-0000-0000-0000-000000000001 does not exist"),
    ("modify_node", "not-a-uuid", "subscription not-a-uuid does not exist"),
])
def test_start_answers_404_for_an_unknown_workflow_or_subscription(api, catalogue, workflow_name, subscription,
                                                                  message):
    response = start(api, workflow_name, subscription=subscription)

    assert response.status_code == 404
    assert response.json()["detail"].startswith(message)
    assert not Process.objects.exists()


@runs
def test_start_on_an_out_of_sync_subscription_is_409_naming_the_process_that_holds_it(api, active_node):
    holder = start(api, "modify_node", subscription=active_node.pk).json()
    assert holder["status"] == "suspended"

    response = start(api, "modify_node", subscription=active_node.pk)

    assert response.status_code == 409
    detail_text = response.json()["detail"]
    assert detail_text.startswith(f"cannot start modify_node: subscription {active_node.pk} is out of sync")
    assert f"process {holder['id']} (modify_node, suspended) is running on it" in detail_text
    assert Process.objects.count() == 1


@runs
def test_start_of_a_workflow_not_startable_on_the_subscription_is_412(api, active_node):
    active_node.disable(by="test")
    active_node.save()
    generic = SubscriptionFactory(lifecycle="active")

    disabled = start(api, "modify_node", subscription=active_node.pk)
    other_product = start(api, "modify_node", subscription=generic.pk)

    assert disabled.status_code == 412
    assert disabled.json()["detail"] == (
        f"cannot start modify_node: subscription {active_node.pk} is disabled; modify_node may start only on "
        f"active subscriptions"
    )
    assert other_product.status_code == 412
    assert "modify_node does not serve product" in other_product.json()["detail"]
    assert not Process.objects.exists()


@runs
def test_a_paused_engine_answers_503_to_start_resume_and_retry(api):
    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes")
    suspended = start_process("t_input")
    pause_engine()

    started = start(api, "t_writes")
    resumed = api.post(f"{detail(suspended.process_id)}resume/", {"input": {"colour": "red"}}, format="json")
    retried = api.post(f"{detail(failed.process_id)}retry/", format="json")

    assert started.status_code == resumed.status_code == retried.status_code == 503
    assert started.json() == {"detail": "cannot start t_writes: the engine is paused; resume the engine first"}
    assert resumed.json() == {"detail": "cannot resume a process: the engine is paused; resume the engine first"}
    assert retried.json() == {"detail": "cannot retry a process: the engine is paused; resume the engine first"}
    assert Process.objects.count() == 2


# --- idempotency -------------------------------------------------------------------------------------
@runs
def test_a_repeat_with_the_same_idempotency_key_and_body_returns_the_same_process(api, runner):
    first = start(api, "t_writes", **{"Idempotency-Key": "order-42"})
    # The same request in another spelling: defaults left out, keys in another order.
    again = api.post(URL, {"workflow": "t_writes"}, format="json", headers={"Idempotency-Key": "order-42"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json() == {"id": first.json()["id"], "status": "completed"}
    assert Process.objects.count() == 1
    key = IdempotencyKey.objects.get()
    assert (key.user, key.key, str(key.process_id)) == (runner, "order-42", first.json()["id"])
    assert key.body_hash == idempotency.body_hash({"workflow": "t_writes", "subscription": None, "input": {}})


@runs
def test_the_same_idempotency_key_with_another_body_is_422(api):
    first = start(api, "t_writes", **{"Idempotency-Key": "order-42"})

    response = start(api, "t_input", **{"Idempotency-Key": "order-42"})

    assert response.status_code == 422
    assert response.json() == {"detail": (
        f"Idempotency-Key 'order-42' was already used with a different request body (it started process "
        f"{first.json()['id']}); use a new key for a new request"
    )}
    assert Process.objects.count() == 1


@runs
def test_idempotency_keys_are_per_user_and_a_refused_start_keeps_no_key(api, superuser):
    mine = start(api, "t_writes", **{"Idempotency-Key": "k1"})
    theirs = start(client_for(superuser), "t_writes", **{"Idempotency-Key": "k1"})
    assert theirs.status_code == 201 and theirs.json()["id"] != mine.json()["id"]

    refused = start(api, "t_writez", **{"Idempotency-Key": "k2"})
    corrected = start(api, "t_input", **{"Idempotency-Key": "k2"})
    assert (refused.status_code, corrected.status_code) == (404, 201)
    assert corrected.json()["status"] == "suspended"
    assert IdempotencyKey.objects.count() == 3


@runs
def test_a_malformed_idempotency_key_is_400(api):
    response = start(api, "t_writes", **{"Idempotency-Key": "x" * 256})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "Idempotency-Key": ["must be 1 to 255 visible ASCII characters (no spaces), e.g. a UUID"]
    }
    assert not Process.objects.exists()


@pytest.mark.requires_postgres
@runs
def test_two_concurrent_repeats_with_one_key_start_one_process(runner, monkeypatch):
    # Both requests look the key up (and find nothing) before either inserts it: the unique index decides.
    barrier = threading.Barrier(2, timeout=20)
    lookups: list[int] = []
    real_find = idempotency._find

    def find_then_meet(*args):
        found = real_find(*args)
        lookups.append(1)
        if len(lookups) <= 2:
            barrier.wait()
        return found

    monkeypatch.setattr(idempotency, "_find", find_then_meet)
    answers: list[tuple[int, str]] = []

    def post() -> None:
        try:
            response = start(client_for(runner), "t_writes", **{"Idempotency-Key": "race"})
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(code for code, _ in answers) == [200, 201]
    assert len(lookups) == 3  # the loser's insert failed on the unique key, and it looked again
    assert len({process_id for _, process_id in answers}) == 1
    assert Process.objects.count() == 1 and IdempotencyKey.objects.count() == 1
    assert Process.objects.get().status == "completed"


# --- list, counts ------------------------------------------------------------------------------------
@runs
def test_the_list_filters_orders_and_pages(api, active_node, superuser):
    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes", by="alice")
    suspended = start_process("t_input", by="bob")
    on_node = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    task = start_process("task_check_products", by="bob")
    Process.objects.filter(pk=failed.pk).update(started_at=timezone.now() - timedelta(days=2))

    def ids(**params: object) -> list[str]:
        response = api.get(URL, params)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids(status="failed") == [str(failed.pk)]
    assert set(ids(status="failed,suspended")) == {str(p.pk) for p in (failed, suspended, on_node)}
    assert set(ids(status=["failed", "completed"])) == {str(failed.pk), str(task.pk)}
    assert ids(workflow="t_input") == [str(suspended.pk)]
    assert ids(subscription=str(active_node.pk)) == [str(on_node.pk)]
    assert set(ids(created_by="alice")) == {str(failed.pk), str(on_node.pk)}
    assert ids(is_task="true") == [str(task.pk)]
    assert ids(started_before=(timezone.now() - timedelta(days=1)).isoformat()) == [str(failed.pk)]
    assert str(failed.pk) not in ids(started_after=(timezone.now() - timedelta(days=1)).isoformat())
    assert ids(ordering="workflow") == [str(p.pk) for p in (on_node, suspended, failed, task)]
    assert ids(ordering="-started_at")[-1] == str(failed.pk)
    assert ids() == ids(ordering="-started_at")

    page = api.get(URL, {"limit": 2, "offset": 1}).json()
    assert page["count"] == 4 and len(page["results"]) == 2

    item = api.get(URL, {"subscription": str(active_node.pk)}).json()["results"][0]
    assert item == {
        "id": str(on_node.pk), "workflow": "modify_node", "status": "suspended",
        "last_step": "Ask for the new node name", "failed_reason": "", "created_by": "alice",
        "started_at": item["started_at"], "last_modified_at": item["last_modified_at"], "is_task": False, "note": "",
        "subscriptions": [str(active_node.pk)], "parent": None, "child_index": None,
    }


@pytest.mark.django_db
def test_bad_list_parameters_are_400(api):
    for params, field in [({"status": "sleeping"}, "status"), ({"subscription": "nope"}, "subscription"),
                          ({"ordering": "colour"}, "ordering"), ({"started_after": "yesterday"}, "started_after")]:
        response = api.get(URL, params)
        assert response.status_code == 400, params
        assert list(response.json()["errors"]) == [field]
    assert "Select a valid choice. sleeping is not one of the available choices." in (
        api.get(URL, {"status": "failed,sleeping"}).json()["errors"]["status"][0]
    )


@runs
def test_status_counts_list_every_status_with_zeros(api):
    flows.CONTROL["fail_times"] = 1
    start_process("t_writes")
    start_process("t_writes")
    start_process("t_input")

    response = api.get(f"{URL}status-counts/")

    assert response.status_code == 200
    counts = response.json()["counts"]
    assert set(counts) == set(ProcessStatus.values)
    assert (counts["failed"], counts["completed"], counts["suspended"], counts["aborted"]) == (1, 1, 1, 0)


# --- detail --------------------------------------------------------------------------------------------
@runs
def test_the_detail_shows_steps_with_state_deltas_and_no_pending_steps_once_completed(api, catalogue):
    process_id = start(api, "create_node", data=CREATE_NODE_INPUT).json()["id"]

    body = api.get(detail(process_id)).json()

    assert body["status"] == "completed" and body["pending_steps"] == [] and body["form"] is None
    names = [row["name"] for row in body["steps"]]
    assert names == get_workflow("create_node").steps.names
    rows = {row["name"]: row for row in body["steps"]}
    first = rows["Start"]
    first_state = api.get(first["url"]).json()["state"]
    assert first["state_delta"] == {"added": first_state, "changed": {}, "removed": []}
    assert first_state["node_name"] == "rt1" and first_state["inventory_id"] == 7
    subscription_id = body["subscriptions"][0]
    assert rows["Create subscription"]["state_delta"] == {
        "added": {"subscription_id": subscription_id}, "changed": {}, "removed": [],
    }
    loopback = rows["Allocate loopback in IPAM"]
    assert list(loopback["state_delta"]["added"]) == ["ipv4_loopback"]
    loopback_state = api.get(loopback["url"]).json()["state"]
    assert loopback["state_delta"]["added"]["ipv4_loopback"] == loopback_state["ipv4_loopback"]
    assert rows["Set subscription active"]["state_delta"] == {"added": {}, "changed": {}, "removed": []}
    assert body["current_state"] == api.get(body["steps"][-1]["url"]).json()["state"]
    assert set(first) == {"number", "name", "status", "state_delta", "started_at", "completed_at", "created_by",
                          "attempt", "error", "error_type", "traceback", "url"}
    assert [row["number"] for row in body["steps"]] == list(range(1, len(names) + 1))
    assert body["steps_count"] == len(names) and body["earlier_steps"] is None
    assert (first["status"], first["created_by"], first["attempt"]) == ("success", "runner", 1)


def test_state_delta_names_added_changed_and_removed_keys():
    before = {"a": 1, "b": {"x": 1}, "c": 3, "same": "s"}
    after = {"a": 2, "b": {"x": 2}, "d": 4, "same": "s"}

    assert state_delta(before, after) == {"added": {"d": 4}, "changed": {"a": 2, "b": {"x": 2}},
                                          "removed": ["c"]}
    assert state_delta({}, {}) == {"added": {}, "changed": {}, "removed": []}


@pytest.mark.django_db
@pytest.mark.parametrize("process_id", ["00000000-0000-0000-0000-000000000001", "not-a-process"])
def test_unknown_and_malformed_process_ids_are_404(api, process_id):
    calls = [
        api.get(detail(process_id)),
        api.get(detail(process_id), headers={"If-None-Match": '"x"'}),
        api.post(f"{detail(process_id)}resume/", {"input": {}}, format="json"),
        api.post(f"{detail(process_id)}retry/", format="json"),
        api.post(f"{detail(process_id)}abort/", format="json"),
        api.delete(detail(process_id)),
    ]
    for response in calls:
        assert response.status_code == 404
        assert response.json() == {"detail": f"process {process_id} does not exist"}


@runs
def test_the_etag_answers_304_until_the_process_changes(api, superuser):
    process_id = start_process("t_input").process_id
    first = api.get(detail(process_id))
    etag = first.headers["ETag"]

    with CaptureQueriesContext(connection) as queries:
        unchanged = api.get(detail(process_id), headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == etag
    assert len(queries) == 1  # the process's last_modified_at and status, no step rows
    assert api.get(detail(process_id), headers={"If-None-Match": f'"other", {etag}'}).status_code == 304
    assert api.get(detail(process_id), headers={"If-None-Match": '"other"'}).status_code == 200
    # Staff see tracebacks: another representation, another tag.
    assert client_for(superuser).get(detail(process_id)).headers["ETag"] != etag

    api.post(f"{detail(process_id)}resume/", {"input": {"colour": "red"}}, format="json")
    changed = api.get(detail(process_id), headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()["status"] == "completed"


# --- resume, retry, abort, delete --------------------------------------------------------------------
@runs
def test_resume_through_the_api_refuses_invalid_input_then_completes_with_valid_input(api, active_node):
    process_id = start(api, "modify_node", subscription=active_node.pk).json()["id"]
    body = api.get(detail(process_id)).json()
    assert body["status"] == "suspended"
    assert body["pending_steps"][0] == "Ask for the new node name"
    assert body["pending_steps"][-1] == "Done"
    form = body["form"]
    assert form["step"] == "Ask for the new node name"
    assert form["initial"] == {"node_name": "rtr-1", "node_role": "core"}
    assert set(form["schema"]["properties"]) == {"node_name", "node_role"}
    assert form["schema"]["required"] == ["node_name"]
    resume = f"{detail(process_id)}resume/"

    invalid = api.post(resume, {"input": {"node_name": "Not A Host", "colour": "red"}}, format="json")
    assert invalid.status_code == 400
    assert set(invalid.json()["errors"]) == {"node_name", "colour"}
    assert invalid.json()["detail"].startswith("input for step 'Ask for the new node name': invalid input (")
    unknown_key = api.post(resume, {"inputs": {"node_name": "rtr-2"}}, format="json")
    assert unknown_key.status_code == 400 and list(unknown_key.json()["errors"]) == ["inputs"]
    assert Process.objects.get(pk=process_id).status == "suspended"

    valid = api.post(resume, {"input": {"node_name": "rtr-2"}}, format="json")

    assert valid.status_code == 200
    assert valid.json() == {"id": process_id, "status": "completed"}
    assert NodeProduct.load(active_node.pk).node.node_name == "rtr-2"
    assert InputState.objects.filter(process_id=process_id, input_type="user_input").get().created_by == "runner"

    again = api.post(resume, {"input": {"node_name": "rtr-3"}}, format="json")
    assert again.status_code == 409
    assert again.json() == {"detail": f"cannot resume process {process_id}: it is completed, not suspended "
                                      f"(waiting for input)"}


@runs
def test_retry_through_the_api_runs_the_failed_step_again(api, superuser):
    flows.CONTROL["fail_times"] = 1
    process_id = start(api, "t_writes").json()["id"]
    body = api.get(detail(process_id)).json()
    assert body["status"] == "failed"
    assert body["failed_reason"] == "Write B then maybe fail: the external system said no"
    assert body["pending_steps"] == ["Write B then maybe fail", "Write C", "Done"]
    failed = body["steps"][-1]
    assert (failed["status"], failed["error"], failed["error_type"]) == (
        "failed", "the external system said no", "RuntimeError")
    assert failed["state_delta"] == {"added": {}, "changed": {}, "removed": []}
    assert failed["traceback"] is None  # not staff
    staff_view = client_for(superuser).get(detail(process_id)).json()
    assert "RuntimeError: the external system said no" in staff_view["steps"][-1]["traceback"]

    retried = api.post(f"{detail(process_id)}retry/", format="json")

    assert retried.status_code == 200
    assert retried.json() == {"id": process_id, "status": "completed"}
    rows = api.get(detail(process_id)).json()["steps"]
    assert [(row["name"], row["status"], row["attempt"]) for row in rows[-4:]] == [
        ("Write B then maybe fail", "failed", 1), ("Write B then maybe fail", "success", 2),
        ("Write C", "success", 1), ("Done", "complete", 1),
    ]
    assert rows[-3]["state_delta"] == {"added": {"b_written": True}, "changed": {}, "removed": []}

    again = api.post(f"{detail(process_id)}retry/", format="json")
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"cannot retry process {process_id}: it is completed; only failed")
    assert api.post(f"{detail(process_id)}retry/", {"force": True}, format="json").status_code == 400


@runs
def test_abort_through_the_api_records_the_reason(api):
    process_id = start(api, "t_input").json()["id"]

    response = api.post(f"{detail(process_id)}abort/", {"reason": "customer cancelled"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"id": process_id, "status": "aborted"}
    body = api.get(detail(process_id)).json()
    assert body["failed_reason"] == "aborted by runner: customer cancelled"
    assert body["pending_steps"] == [] and body["form"] is None
    again = api.post(f"{detail(process_id)}abort/", format="json")
    assert again.status_code == 409
    assert again.json() == {"detail": f"cannot abort process {process_id}: it is already aborted"}
    assert api.post(f"{detail(process_id)}abort/", {"reason": 5, "why": "x"}, format="json").status_code == 400


@runs
def test_delete_removes_a_stopped_task_with_its_log_but_refuses_a_running_task_and_workflows(api, settings):
    workflow_process = start(api, "t_writes").json()["id"]
    refused = api.delete(detail(workflow_process))
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        f"cannot delete process {workflow_process}: t_writes is not a task, and only tasks' processes can be deleted"
    )

    # An executor that runs nothing leaves the task running, as a busy worker would.
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    task_id = start(api, "task_check_products").json()["id"]
    running = api.delete(detail(task_id))
    assert running.status_code == 409
    assert running.json() == {"detail": f"cannot delete task {task_id}: it is running; abort it first"}

    api.post(f"{detail(task_id)}abort/", format="json")
    deleted = api.delete(detail(task_id))

    assert deleted.status_code == 204
    assert not Process.objects.filter(pk=task_id).exists()
    assert not ProcessStep.objects.filter(process_id=task_id).exists()
    assert not InputState.objects.filter(process_id=task_id).exists()
    assert api.get(detail(task_id)).status_code == 404
    assert Process.objects.filter(pk=workflow_process).exists()


# --- bounded queries ---------------------------------------------------------------------------------
def _processes(count: int, subscription: Subscription) -> list[Process]:
    row = workflow_row(get_workflow("t_writes"))
    processes = Process.objects.bulk_create(
        Process(workflow=row, created_by="bulk", workflow_version=get_workflow("t_writes").version)
        for _ in range(count)
    )
    ProcessSubscription.objects.bulk_create(
        ProcessSubscription(process=process, subscription=subscription) for process in processes
    )
    return processes


def _queries(api: APIClient, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = api.get(path)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_the_list_runs_the_same_number_of_queries_for_5_and_50_processes(api):
    subscription = SubscriptionFactory(product=Product.objects.create(name="P", product_type="Generic"))
    _processes(5, subscription)
    few = _queries(api, URL)
    _processes(45, subscription)

    many = _queries(api, URL)

    assert len(api.get(URL).json()["results"]) == 50
    assert few == many <= 3


@pytest.mark.django_db
def test_the_detail_runs_the_same_number_of_queries_for_3_and_30_steps_and_for_60_and_600(api):
    subscription = SubscriptionFactory(product=Product.objects.create(name="P", product_type="Generic"))
    small, big, long, longer = _processes(4, subscription)
    now = timezone.now()
    for process, count in ((small, 3), (big, 30), (long, 60), (longer, 600)):
        # Rows as the engine writes them: a snapshot now and then, deltas in between.
        ProcessStep.objects.bulk_create(
            ProcessStep(process=process, name=f"step {n}", status="success", created_by="bulk",
                        state={"n": n} if n % 20 == 0 else None,
                        delta={"added": {}, "changed": {"n": n}, "removed": []}, started_at=now, completed_at=now)
            for n in range(count)
        )

    few, many = _queries(api, detail(small.pk)), _queries(api, detail(big.pk))
    one_page_of_many, one_page_of_more = _queries(api, detail(long.pk)), _queries(api, detail(longer.pk))

    assert len(api.get(detail(big.pk)).json()["steps"]) == 30
    assert few == many <= 5
    # Past one page: one more query (the state before the page), however long the log.
    assert one_page_of_many == one_page_of_more == few + 1
    body = api.get(detail(longer.pk)).json()
    assert len(body["steps"]) == 50 and body["steps_count"] == 600
    assert body["current_state"] == {"n": 599}
