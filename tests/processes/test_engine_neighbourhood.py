"""Subscriptions that depend on each other: terminate while used, held neighbours, before/after, predicates."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from rest_framework.test import APIClient

from orchestrator_site.errors import InvalidInput
from processes.models import Process, ScheduledRun
from processes.services import abort_process, resume_process, retry_process, start_process
from subscriptions.errors import RelationConflict, StaleSubscription
from subscriptions.models import Product, Subscription
from subscriptions.relations import in_use_by
from tests.factories import UserFactory
from tests.processes import flows
from tests.processes.conftest import new_active_node
from workflows.errors import SubscriptionOutOfSync, WorkflowNotStartable
from workflows.node import ipam
from workflows.node.products import NodeProduct, PortProduct

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(db) -> APIClient:
    user = UserFactory(username="runner", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_process", content_type__app_label="processes"))
    client = APIClient()
    client.force_authenticate(user)
    return client


def new_port(node: Subscription, name: str) -> Subscription:
    model = PortProduct.new(Product.objects.get(name="Port 10G"), "customer-1", f"Port {name}")
    model.port.port_name, model.port.port_mode = name, "tagged"
    model.port.node = NodeProduct.load(node).node
    model.subscription.provision()
    model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


def with_ipam_loopback(node: Subscription) -> None:
    """Give the node the loopback IPAM has for it, so that its validation passes."""
    model = NodeProduct.load(node.pk)
    model.node.ipv4_loopback = ipam.lookup_loopback(model.node.node_name)
    model.save()


def workflows_of(api: APIClient, subscription: Subscription) -> dict[str, dict]:
    response = api.get(f"/api/subscriptions/{subscription.pk}/workflows/")
    assert response.status_code == 200
    return {item["name"]: item for item in response.json()}


# --- in use by: terminate ----------------------------------------------------------------------------
def test_terminate_is_refused_at_start_while_an_active_port_uses_the_node(active_node, active_port, api):
    before = Process.objects.count()

    with pytest.raises(WorkflowNotStartable) as refused:
        start_process("terminate_node", subscription_id=active_node.pk)

    assert refused.value.status_code == 412
    assert f"Port 10G {active_port.pk} (Port rtr-1 xe-0/0/0, active) still uses it" in str(refused.value)
    assert Process.objects.count() == before
    # The API answers the same, naming the users; the list of workflows says why, with their ids.
    response = api.post("/api/processes/", {"workflow": "terminate_node", "subscription": str(active_node.pk)},
                        format="json")
    assert response.status_code == 412
    assert [u["subscription_id"] for u in response.json()["in_use_by"]] == [str(active_port.pk)]
    listed = workflows_of(api, active_node)["terminate_node"]
    assert listed["allowed"] is False
    assert any(str(active_port.pk) in reason for reason in listed["reasons"])
    assert [u["subscription_id"] for u in listed["in_use_by"]] == [str(active_port.pk)]
    assert listed["in_use_by"][0]["status"] == "active"
    assert Process.objects.count() == before


def test_terminate_is_allowed_once_its_users_are_terminated(active_node, active_port):
    assert start_process("terminate_port", subscription_id=active_port.pk).status == "completed"

    process = start_process("terminate_node", subscription_id=active_node.pk)

    assert process.status == "completed"
    assert Subscription.objects.get(pk=active_node.pk).status == "terminated"


def test_a_terminate_step_refuses_a_port_that_appeared_after_the_start(active_node):
    process = start_process("t_terminate_node_confirm", subscription_id=active_node.pk)
    assert process.status == "suspended"
    port = new_port(active_node, "xe-0/0/7")  # made behind the workflow's back, while it waited

    resumed = resume_process(process.process_id, {"confirm": True})

    assert resumed.status == "failed"
    assert resumed.last_step == "Set subscription terminated"
    assert f"cannot terminate Node {active_node.pk}" in resumed.failed_reason
    assert f"Port 10G {port.pk} (Port xe-0/0/7, active) still uses it" in resumed.failed_reason
    assert Subscription.objects.get(pk=active_node.pk).status == "active"


def test_a_status_change_in_any_step_is_checked_against_the_graph(active_node, active_port):
    # Whatever path moves the status, the same guard: here the subscription's own transition and save.
    node = Subscription.objects.get(pk=active_node.pk)
    node.terminate(by="someone")
    with pytest.raises(RelationConflict, match="still uses it"):
        node.save()
    assert Subscription.objects.get(pk=active_node.pk).status == "active"


# --- in sync means the neighbourhood too -------------------------------------------------------------
def test_a_modify_of_a_port_is_refused_while_its_node_is_held(active_node, active_port, api):
    holder = start_process("t_hold_node", subscription_id=active_node.pk)
    assert holder.status == "suspended"
    before = Process.objects.count()

    with pytest.raises(SubscriptionOutOfSync) as refused:
        start_process("modify_port", subscription_id=active_port.pk, user_input={"enabled": False})

    assert refused.value.status_code == 409
    message = str(refused.value)
    assert f"Node {active_node.pk} (Node rtr-1) is held by process {holder.process_id} (t_hold_node)" in message
    assert Process.objects.count() == before
    response = api.post("/api/processes/", {"workflow": "modify_port", "subscription": str(active_port.pk),
                                            "input": {"enabled": False}}, format="json")
    assert response.status_code == 409
    (locked,) = response.json()["locked_relations"]
    assert locked["subscription_id"] == str(active_node.pk) and locked["description"] == "Node rtr-1"
    assert locked["held_by"] == str(holder.process_id)
    listed = workflows_of(api, active_port)["modify_port"]
    assert listed["allowed"] is False
    assert [item["subscription_id"] for item in listed["locked_relations"]] == [str(active_node.pk)]

    # Once the node's process is done, the port is free again.
    resume_process(holder.process_id, {"confirm": True})
    assert start_process("modify_port", subscription_id=active_port.pk,
                         user_input={"enabled": False}).status == "completed"


def test_a_modify_of_a_node_is_refused_while_one_of_its_ports_is_held(active_node, active_port):
    holder = start_process("t_hold_port", subscription_id=active_port.pk)

    with pytest.raises(SubscriptionOutOfSync, match=f"held by process {holder.process_id}"):
        start_process("modify_node", subscription_id=active_node.pk)


def test_read_only_workflows_keep_working_next_to_a_held_neighbour(active_node, active_port):
    with_ipam_loopback(active_node)
    start_process("t_hold_node", subscription_id=active_node.pk)

    note = start_process("modify_note", subscription_id=active_port.pk, user_input={"note": "spare"})
    validation = start_process("validate_node", subscription_id=active_node.pk)

    assert note.status == "completed" and validation.status == "completed"


def test_an_out_of_sync_neighbour_with_no_process_blocks_a_start_until_set_in_sync(active_node, active_port):
    Subscription.objects.filter(pk=active_node.pk).update(insync=False)

    with pytest.raises(SubscriptionOutOfSync, match=r"is out of sync \(no process holds it"):
        start_process("modify_port", subscription_id=active_port.pk, user_input={"enabled": False})


@pytest.mark.requires_postgres
def test_racing_starts_on_a_node_and_its_port_never_both_hold(catalogue):
    """50 rounds: a start on a node and one on its port at the same moment; exactly one may hold."""
    rounds = 50
    for round_number in range(rounds):
        node = new_active_node(f"race-{round_number}")
        port = new_port(node, f"xe-{round_number}")
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def start(workflow: str, subscription: Subscription, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                start_process(workflow, subscription_id=subscription.pk)
                outcomes.append("started")
            except SubscriptionOutOfSync:
                outcomes.append("refused")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=start, args=("t_hold_node", node)),
                   threading.Thread(target=start, args=("t_hold_port", port))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["refused", "started"], f"round {round_number}: {outcomes}"
        held = Process.objects.filter(process_subscriptions__subscription__in=[node, port])
        assert held.count() == 1, f"round {round_number}"


# --- validate and reconcile ----------------------------------------------------------------------------
def test_validate_runs_on_an_out_of_sync_subscription_and_leaves_it_to_its_holder(active_node):
    with_ipam_loopback(active_node)
    holder = start_process("t_hold_node", subscription_id=active_node.pk)

    validation = start_process("validate_node", subscription_id=active_node.pk)

    assert validation.status == "completed"
    assert Subscription.objects.get(pk=active_node.pk).insync is False  # still the holder's
    assert resume_process(holder.process_id, {"confirm": True}).status == "completed"
    assert Subscription.objects.get(pk=active_node.pk).insync is True


def test_reconcile_brings_a_drifted_out_of_sync_subscription_back(active_node, api):
    # Drift: someone changed the loopback in IPAM, and an aborted process left the node out of sync.
    ipam.allocate_loopback("rtr-1")
    stuck = start_process("t_hold_node", subscription_id=active_node.pk)
    abort_process(stuck.process_id, reason="gave up")
    assert Subscription.objects.get(pk=active_node.pk).insync is False
    with pytest.raises(SubscriptionOutOfSync):
        start_process("modify_node", subscription_id=active_node.pk)
    assert workflows_of(api, active_node)["reconcile_node"]["allowed"] is True

    process = start_process("reconcile_node", subscription_id=active_node.pk)

    assert process.status == "completed"
    node = NodeProduct.load(active_node.pk)
    assert node.subscription.insync is True
    assert node.node.ipv4_loopback == ipam.lookup_loopback("rtr-1")
    delta = api.get(f"/api/processes/{process.process_id}/").json()["subscription_delta"]
    assert {"field": "node.ipv4_loopback", "old": None, "new": str(node.node.ipv4_loopback)} in delta["changes"]


def test_reconcile_is_refused_while_a_process_holds_the_subscription(active_node):
    holder = start_process("t_hold_node", subscription_id=active_node.pk)

    with pytest.raises(SubscriptionOutOfSync, match=f"process {holder.process_id}"):
        start_process("reconcile_node", subscription_id=active_node.pk)


# --- before and after ----------------------------------------------------------------------------------
def test_the_delta_of_a_modify_shows_each_changed_field_old_and_new(active_node, api, staff_client):
    process = start_process("modify_node", subscription_id=active_node.pk)
    process = resume_process(process.process_id, {"node_name": "rtr-9"})
    assert process.status == "completed"

    body = api.get(f"/api/processes/{process.process_id}/").json()

    delta = body["subscription_delta"]
    assert delta["subscription_id"] == str(active_node.pk) and delta["complete"] is True
    assert delta["changes"] == [
        {"field": "description", "old": "Node rtr-1", "new": "Node rtr-9"},
        {"field": "node.node_name", "old": "rtr-1", "new": "rtr-9"},
    ]
    before = body["current_state"]["subscription_before"]
    assert before["status"] == "active" and before["insync"] is True
    assert before["blocks"]["node"]["node_name"] == "rtr-1"
    # The admin's process page shows the same table.
    page = staff_client.get(f"/admin/processes/process/{process.process_id}/change/").content.decode()
    assert 'id="subscription-delta"' in page
    assert "node.node_name" in page and "rtr-1" in page and "rtr-9" in page


def test_a_failed_modify_shows_what_it_had_changed_so_far(active_node, api):
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_rename_then_fail", subscription_id=active_node.pk, user_input={})
    assert process.status == "failed"

    delta = api.get(f"/api/processes/{process.process_id}/").json()["subscription_delta"]

    assert delta["complete"] is False and "so far" in delta["as_of"]
    assert {"field": "node.node_name", "old": "rtr-1", "new": "renamed"} in delta["changes"]
    assert {"field": "insync", "old": True, "new": False} in delta["changes"]
    # Retried to completion, the delta is the final one.
    assert retry_process(process.process_id).status == "completed"
    final = api.get(f"/api/processes/{process.process_id}/").json()["subscription_delta"]
    assert final["complete"] is True
    assert [c["field"] for c in final["changes"]] == ["description", "node.node_name"]


def test_the_delta_of_a_terminate_shows_the_status_and_end_date(active_node, api):
    process = start_process("terminate_node", subscription_id=active_node.pk)

    changes = {c["field"]: c for c in api.get(f"/api/processes/{process.process_id}/").json()
               ["subscription_delta"]["changes"]}

    assert changes["status"] == {"field": "status", "old": "active", "new": "terminated"}
    assert changes["end_date"]["old"] is None and changes["end_date"]["new"]


def test_a_create_or_a_task_has_no_subscription_delta(api):
    process = start_process("t_single_task")
    assert api.get(f"/api/processes/{process.process_id}/").json()["subscription_delta"] is None


# --- start predicates and stale starts ------------------------------------------------------------------
def test_a_false_predicate_answers_412_with_its_message_and_creates_no_process(api):
    before = Process.objects.count()

    response = api.post("/api/processes/", {"workflow": "t_moon_task"}, format="json")

    assert response.status_code == 412
    assert response.json()["detail"] == ("cannot start t_moon_task: the moon is not full; this task runs only "
                                         "at full moon")
    assert Process.objects.count() == before
    flows.CONTROL["moon_full"] = 1
    assert api.post("/api/processes/", {"workflow": "t_moon_task"}, format="json").status_code == 201


def test_a_predicate_that_raises_refuses_the_start_saying_so(api):
    before = Process.objects.count()

    response = api.post("/api/processes/", {"workflow": "t_broken_predicate_task"}, format="json")

    assert response.status_code == 412
    assert response.json()["detail"] == ("cannot start t_broken_predicate_task: the start condition broken_predicate "
                                         "of t_broken_predicate_task could not be checked: KeyError: 'moon_phase'")
    assert Process.objects.count() == before


def test_a_second_instance_is_refused_while_one_is_unfinished():
    first = start_process("t_single_task")
    assert first.status == "suspended"

    with pytest.raises(WorkflowNotStartable, match=f"t_single_task is already running: process {first.process_id} "
                                                   f"is suspended"):
        start_process("t_single_task")

    resume_process(first.process_id, {"confirm": True})
    assert start_process("t_single_task").status == "suspended"


@pytest.mark.requires_postgres
def test_racing_starts_of_a_single_instance_task_create_exactly_one(db):
    for round_number in range(50):
        barrier = threading.Barrier(3)
        outcomes: list[str] = []

        def start(barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                start_process("t_single_task")
                outcomes.append("started")
            except WorkflowNotStartable:
                outcomes.append("refused")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["refused", "refused", "started"], f"round {round_number}: {outcomes}"
        unfinished = Process.objects.filter(workflow__name="t_single_task", status="suspended")
        assert unfinished.count() == 1
        abort_process(unfinished.get().process_id)


def test_the_scheduler_skips_a_period_while_the_last_run_is_unfinished(settings):
    from processes.scheduler import start_due_tasks

    settings.ORCHESTRATOR = {"SCHEDULE": {"t_single_task": "every 60 minutes"}}
    first = start_due_tasks()
    assert len(first) == 1
    ScheduledRun.objects.all().delete()  # a new period begins; the first run still waits for input

    assert start_due_tasks() == []

    assert Process.objects.filter(workflow__name="t_single_task").count() == 1
    (run,) = ScheduledRun.objects.all()
    assert run.process is None  # the period is marked done, not tried again at every tick


def test_a_start_with_a_stale_subscription_version_is_refused(active_node, api):
    seen = Subscription.objects.get(pk=active_node.pk).version
    start_process("modify_note", subscription_id=active_node.pk, user_input={"note": "changed meanwhile"})
    now = Subscription.objects.get(pk=active_node.pk).version
    before = Process.objects.count()

    response = api.post("/api/processes/", {"workflow": "modify_node", "subscription": str(active_node.pk),
                                            "subscription_version": seen}, format="json")

    assert response.status_code == 409
    assert f"stale: you saw version {seen} of subscription {active_node.pk}, it is now {now}" in response.json()[
        "detail"]
    assert Process.objects.count() == before
    with pytest.raises(StaleSubscription):
        start_process("modify_node", subscription_id=active_node.pk, subscription_version=seen)
    current = api.post("/api/processes/", {"workflow": "modify_node", "subscription": str(active_node.pk),
                                           "subscription_version": now}, format="json")
    assert current.status_code == 201


@pytest.mark.requires_postgres
def test_a_start_whose_neighbour_a_step_has_locked_answers_busy_not_a_500(active_node, active_port, settings, api):
    from django.db import connection, transaction

    settings.ORCHESTRATOR = {"LOCK_WAIT_SECONDS": 0.3}
    locked, release = threading.Event(), threading.Event()

    def hold_node_row() -> None:
        # What a step changing the node does: its transaction holds the node's row until it commits.
        try:
            with transaction.atomic():
                Subscription.objects.select_for_update().get(pk=active_node.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_node_row)
    holder.start()
    try:
        assert locked.wait(5)
        before = Process.objects.count()
        response = api.post("/api/processes/", {"workflow": "modify_port", "subscription": str(active_port.pk),
                                                "input": {"enabled": False}}, format="json")
        assert response.status_code == 409
        assert "is being changed by a running step right now; try again" in response.json()["detail"]
        assert Process.objects.count() == before
    finally:
        release.set()
        holder.join()
    # Once the step committed, the same start goes through.
    assert start_process("modify_port", subscription_id=active_port.pk,
                         user_input={"enabled": False}).status == "completed"


def test_a_failed_validation_does_not_keep_staff_from_setting_the_subscription_in_sync(active_node):
    from processes.services import set_in_sync

    holder = start_process("t_hold_node", subscription_id=active_node.pk)
    validation = start_process("validate_node", subscription_id=active_node.pk)  # no loopback: it fails
    assert validation.status == "failed"
    abort_process(holder.process_id, reason="stuck")

    set_in_sync(active_node.pk, by="staff", reason="checked by hand")

    assert Subscription.objects.get(pk=active_node.pk).insync is True


def test_a_port_is_created_on_an_active_node_and_not_on_one_a_process_holds(active_node):
    port_product = Product.objects.get(name="Port 10G")
    form = {"product": str(port_product.pk), "customer_id": "customer-1", "node": str(active_node.pk),
            "port_name": "xe-0/0/5", "port_mode": "tagged"}

    created = start_process("create_port", user_input=form)

    assert created.status == "completed"
    port = Subscription.objects.get(process_links__process=created)
    assert port.status == "active" and port.description == "Port rtr-1 xe-0/0/5"
    assert [r.other.subscription_id for r in in_use_by([active_node.pk])[active_node.pk]] == [port.pk]
    start_process("t_hold_node", subscription_id=active_node.pk)
    before = Process.objects.count()
    with pytest.raises(InvalidInput, match=r"is out of sync \(a process is working on it\)"):
        start_process("create_port", user_input={**form, "port_name": "xe-0/0/6"})
    assert Process.objects.count() == before
