"""Races, with real threads on PostgreSQL, many rounds each: exactly one proceeds, and no loser is left behind.

- Starts on one subscription (and a modify against a terminate): one process is created, the others are
  refused with 409 naming the process that holds the subscription; a workflow never acts on a subscription
  in a lifecycle status it may not touch.
- Retries of one process: one wins (200), the others get 409 saying it was already retried.
- Abort of a process whose step is running: answered at once, carried out at the step's end.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from orchestrator_site.errors import OrchestratorError
from processes import leases
from processes.engine import run_process
from processes.models import Process, ProcessStatus, ProcessStep, ProcessSubscription
from processes.operations import create_process
from processes.services import abort_process, start_process
from subscriptions.models import ResourceType, Subscription
from tests.factories import UserFactory
from tests.processes import flows
from tests.processes.conftest import new_active_node
from workflows.node.products import NodeProduct
from workflows.registry import get_workflow

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 50
DEFERRED = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; each one's result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as exc:  # recorded and asserted by the test
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- item 8: racing starts are refused at the start ------------------------------------------------
def test_of_four_starts_at_once_on_one_subscription_exactly_one_is_created_and_the_others_name_it(
    active_node, settings
):
    settings.ORCHESTRATOR = DEFERRED  # created, not run: the subscription stays held by it
    for round_ in range(ROUNDS):
        before = Process.objects.count()
        outcomes = at_once([lambda n=n: start_process("t_rename_node", subscription_id=active_node.pk,
                                                      by=f"user-{n}") for n in range(4)])

        created = [o for o in outcomes if isinstance(o, Process)]
        refused = [o for o in outcomes if isinstance(o, OrchestratorError)]
        assert len(created) == 1 and len(refused) == 3, (round_, outcomes)
        winner = created[0]
        for refusal in refused:
            assert refusal.status_code == 409
            assert f"held by process {winner.process_id} (t_rename_node, running)" in str(refusal)
        assert Process.objects.count() == before + 1  # no loser left, failed or otherwise
        abort_process(winner.process_id, by="test", reason="next round")
    assert not Process.objects.filter(status=ProcessStatus.FAILED).exists()


def test_racing_starts_that_run_at_once_leave_one_completed_process_and_no_failed_loser(active_node, monkeypatch):
    # Inline: the winner runs in its thread right after its start commits, holding the subscription
    # for a moment (its first step waits), while the others are refused at the start.
    monkeypatch.setenv("ENGINE_TEST_HOLD_SECONDS", "0.3")
    for round_ in range(10):
        outcomes = at_once([lambda n=n: start_process("t_rename_node", subscription_id=active_node.pk,
                                                      user_input=None, by=f"user-{n}") for n in range(3)])
        completed = [o for o in outcomes if isinstance(o, Process) and o.status == "completed"]
        assert len(completed) == 1, (round_, outcomes)
        assert all(isinstance(o, OrchestratorError) and o.status_code == 409 for o in outcomes
                   if o not in completed), outcomes
    assert not Process.objects.filter(status=ProcessStatus.FAILED).exists()
    assert Subscription.objects.get(pk=active_node.pk).insync is True


# --- item 7: a modify and a terminate at once -------------------------------------------------------
def test_a_modify_and_a_terminate_at_once_one_proceeds_and_a_terminated_node_is_never_renamed(catalogue, settings):
    counts: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        node = new_active_node(f"rtr-{round_}")
        settings.ORCHESTRATOR = DEFERRED
        outcomes = at_once([
            lambda node=node: start_process("t_rename_node", subscription_id=node.pk, user_input={}, by="alice"),
            lambda node=node: start_process("terminate_node", subscription_id=node.pk, by="bob"),
        ])
        created = [o for o in outcomes if isinstance(o, Process)]
        assert len(created) == 1, (round_, outcomes)
        loser = next(o for o in outcomes if not isinstance(o, Process))
        assert isinstance(loser, OrchestratorError) and loser.status_code == 409, loser
        settings.ORCHESTRATOR = {}
        run_process(created[0].process_id)  # the winner's worker runs it
        winner = Process.objects.get(pk=created[0].pk)
        assert winner.status == "completed", winner.failed_reason
        counts[winner.workflow.name] += 1

        stored = NodeProduct.load(node.pk)
        if winner.workflow.name == "terminate_node":
            assert (stored.subscription.status, stored.node.node_name) == ("terminated", f"rtr-{round_}")
            # And the modify can no longer start on it at all.
            with pytest.raises(OrchestratorError, match="is terminated; t_rename_node may start only on active"):
                start_process("t_rename_node", subscription_id=node.pk, user_input={})
        else:
            assert (stored.subscription.status, stored.node.node_name) == ("active", "renamed")
        assert ProcessSubscription.objects.filter(subscription=node).count() == 1
    assert not Process.objects.filter(status=ProcessStatus.FAILED).exists()
    assert sum(counts.values()) == ROUNDS


def test_the_unsync_step_refuses_a_subscription_terminated_since_its_process_started(catalogue):
    # Both accepted (as two processes created before either ran could be): the terminate runs first and
    # completes; the modify then reaches unsync, which re-checks the lifecycle under its row lock.
    node = new_active_node("rtr-late")
    state = {"subscription_id": str(node.pk)}
    modify = create_process(get_workflow("t_rename_node"), dict(state), by="alice", user_input={})
    terminate = create_process(get_workflow("terminate_node"), dict(state), by="bob", user_input={})
    for process in (modify, terminate):
        ProcessSubscription.objects.create(process=process, subscription=node)

    run_process(terminate.process_id, owner=leases.local_owner())
    run_process(modify.process_id, owner=leases.local_owner())

    assert Process.objects.get(pk=terminate.pk).status == "completed"
    modify = Process.objects.get(pk=modify.pk)
    assert modify.status == "failed"
    assert modify.failed_reason.startswith(f"Unsync: subscription {node.pk} is terminated now; t_rename_node may "
                                           f"run only on active subscriptions")
    stored = NodeProduct.load(node.pk)
    assert (stored.subscription.status, stored.node.node_name) == ("terminated", "rtr-late")
    assert ProcessStep.objects.filter(process=modify, name="Rename the node").count() == 0


# --- item 9: retries and aborts at once ------------------------------------------------------------
@pytest.fixture
def api_clients(db) -> list[APIClient]:
    clients = []
    for n in range(4):
        client = APIClient()
        client.force_authenticate(UserFactory(is_staff=True, is_superuser=True, username=f"operator-{n}"))
        clients.append(client)
    return clients


@pytest.mark.parametrize("executor", ["deferred", "inline"])
def test_of_four_retries_at_once_exactly_one_wins_and_the_others_hear_it_was_already_retried(
    catalogue, settings, api_clients, executor
):
    statuses: Counter[int] = Counter()
    for round_ in range(ROUNDS):
        settings.ORCHESTRATOR = {}
        flows.CONTROL["fail_times"] = 1
        failed = start_process("t_writes")
        assert failed.status == "failed"
        settings.ORCHESTRATOR = DEFERRED if executor == "deferred" else {}

        url = f"/api/processes/{failed.process_id}/retry/"
        responses = at_once([lambda c=c, url=url: c.post(url, {}, format="json") for c in api_clients])

        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 409, 409, 409], (round_, [(r.status_code, r.json()) for r in responses])
        for response in responses:
            statuses[response.status_code] += 1
            if response.status_code == 409:
                detail = response.json()["detail"]
                assert ("already retried" in detail or "already running" in detail
                        or "it is completed" in detail or "running one of its steps" in detail), detail
        process = Process.objects.get(pk=failed.pk)
        if executor == "inline":
            assert process.status == "completed"
            assert ResourceType.objects.filter(resource_type=f"c-{failed.process_id}").count() == 1
        else:
            assert process.status == "running" and process.failed_reason == ""
            abort_process(failed.process_id, by="test")
    assert statuses == Counter({200: ROUNDS, 409: 3 * ROUNDS})


def test_abort_of_a_process_whose_step_is_running_answers_at_once_and_ends_it_at_the_step_boundary(
    catalogue, settings, monkeypatch, api_clients
):
    monkeypatch.setenv("ENGINE_TEST_LONG_SECONDS", "3")
    settings.ORCHESTRATOR = DEFERRED
    process = start_process("t_long")
    settings.ORCHESTRATOR = {}
    worker = threading.Thread(target=lambda: (run_process(process.process_id), connections.close_all()))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while leases.rows_in_use([process.process_id]) != {str(process.process_id)}:
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.02)

        asked = time.monotonic()
        response = api_clients[0].post(f"/api/processes/{process.process_id}/abort/", {"reason": "wrong port"},
                                       format="json")
        took = time.monotonic() - asked

        assert response.status_code == 202, response.content
        assert took < 2.9, f"the abort waited {took:.1f}s for the step"
        body = response.json()
        assert body["status"] == "running"
        assert "it stops at its next step boundary" in body["detail"] and "'Take a long time'" in body["detail"]
        assert Process.objects.get(pk=process.pk).status == "running"
    finally:
        worker.join(timeout=30)

    process = Process.objects.get(pk=process.pk)
    assert process.status == "aborted"
    assert process.failed_reason == "aborted by operator-0: wrong port"
    log = list(ProcessStep.objects.filter(process=process).order_by("id").values_list("name", "status"))
    assert log == [("Start", "success"), ("Take a long time", "success"), ("Abort", "abort")]
    assert ResourceType.objects.filter(resource_type=f"long-{process.process_id}").count() == 1
    assert ResourceType.objects.filter(resource_type=f"c-{process.process_id}").count() == 0
