"""Insync: a workflow starts only on an in-sync subscription, and unsync settles races under a row lock."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from processes.models import Process, ProcessStep
from processes.services import start_process
from subscriptions.models import Subscription
from tests.factories import SubscriptionFactory
from workflows.errors import SubscriptionOutOfSync, WorkflowNotStartable
from workflows.node.products import NodeProduct

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_start_on_an_out_of_sync_subscription_is_refused_naming_the_process_holding_it(active_node):
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    assert holder.status == "suspended"  # past unsync, waiting for input: it holds the subscription
    processes_before = Process.objects.count()

    with pytest.raises(SubscriptionOutOfSync) as refused:
        start_process("t_rename_node", subscription_id=active_node.pk)

    message = str(refused.value)
    assert message.startswith("cannot start t_rename_node: subscription")
    assert str(active_node.pk) in message and "is out of sync" in message
    assert f"process {holder.process_id} (modify_node, suspended) is running on it" in message
    assert refused.value.status_code == 409
    assert Process.objects.count() == processes_before  # nothing was created


def test_a_workflow_declared_usable_while_out_of_sync_still_starts(active_node):
    start_process("modify_node", subscription_id=active_node.pk)

    process = start_process("modify_note", subscription_id=active_node.pk, user_input={"note": "call first"})

    assert process.status == "completed"
    stored = Subscription.objects.get(pk=active_node.pk)
    assert stored.note == "call first" and stored.insync is False


def test_a_start_in_a_lifecycle_status_the_workflow_does_not_allow_is_refused(catalogue):
    from subscriptions.models import Product

    terminated = SubscriptionFactory(product=Product.objects.get(name="Node"), lifecycle="terminated")

    with pytest.raises(WorkflowNotStartable) as refused:
        start_process("modify_node", subscription_id=terminated.pk)

    assert refused.value.status_code == 412
    assert "is terminated; modify_node may start only on active subscriptions" in str(refused.value)


def test_a_workflow_for_another_product_is_refused(active_port):
    with pytest.raises(WorkflowNotStartable, match="does not serve product Port 10G"):
        start_process("modify_node", subscription_id=active_port.pk)


def test_the_unsync_step_refuses_a_subscription_already_out_of_sync(active_node):
    holder = start_process("modify_node", subscription_id=active_node.pk)
    # A second process that got past the start check (as in a race) meets unsync's refusal.
    from processes.engine import run_process
    from processes.leases import local_owner
    from processes.operations import create_process
    from workflows.registry import get_workflow

    spec = get_workflow("t_rename_node")
    process = create_process(spec, {"subscription_id": str(active_node.pk)}, by="bob", user_input={})
    run_process(process.process_id, owner=local_owner())  # as the inline executor runs what it created
    process.refresh_from_db()

    assert process.status == "failed"
    failed = ProcessStep.objects.get(process=process, status="failed")
    assert failed.name == "Unsync"
    assert "is already out of sync" in failed.error and str(holder.process_id) in failed.error


@pytest.mark.requires_postgres
def test_two_processes_started_at_once_on_one_subscription_only_one_proceeds(active_node, monkeypatch):
    monkeypatch.setenv("ENGINE_TEST_HOLD_SECONDS", "1.0")
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def start(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(start_process("t_rename_node", subscription_id=active_node.pk,
                                          user_input=None, by=name))
        except Exception as exc:  # recorded and asserted below
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(n,)) for n in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    completed = [o for o in outcomes if isinstance(o, Process) and o.status == "completed"]
    others = [o for o in outcomes if o not in completed]
    assert len(completed) == 1, outcomes
    assert len(others) == 1, outcomes
    # Refused at the start, naming the process that holds the subscription: no failed loser to clean up.
    assert isinstance(others[0], SubscriptionOutOfSync), others
    assert f"held by process {completed[0].process_id}" in str(others[0]) or "out of sync" in str(others[0])
    assert Process.objects.count() == 1
    stored = Subscription.objects.get(pk=active_node.pk)
    assert stored.insync is True
    assert NodeProduct.load(stored).node.node_name == "renamed"


def test_lifecycle_changes_after_a_retry_are_credited_to_who_retried(active_node, monkeypatch):
    from processes.services import retry_process
    from subscriptions.models import SubscriptionLifecycleEvent
    from workflows.node import ipam

    def unreachable(node_name: str) -> None:
        raise ConnectionError("IPAM unreachable")

    monkeypatch.setattr(ipam, "release_loopback", unreachable)
    process = start_process("terminate_node", subscription_id=active_node.pk, by="alice")
    assert process.status == "failed"
    monkeypatch.undo()

    process = retry_process(process.process_id, by="bob")

    assert process.status == "completed"
    event = SubscriptionLifecycleEvent.objects.get(subscription=active_node, transition="terminate")
    assert (event.changed_by, event.process_id) == ("bob", process.process_id)
