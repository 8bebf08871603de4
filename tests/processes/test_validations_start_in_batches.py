"""The nightly validation task starts validations in batches, each its own transaction, resuming at its cursor."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from processes.engine import current_state
from processes.models import Process, ProcessStep, ProcessSubscription
from processes.services import retry_process, start_process
from subscriptions.models import Subscription
from tests.processes.conftest import new_active_node
from workflows.errors import SubscriptionOutOfSync

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

STEP = "Start validate workflows"


def nodes(count: int, first: int = 100) -> list[str]:
    """`count` active, in-sync nodes whose ids sort in the order made (ids `first`, `first` + 1, ...)."""
    return [str(new_active_node(f"rtr-{n}", uuid.UUID(int=n)).subscription_id) for n in range(first, first + count)]


def validations(subscription_ids: Iterable[str]) -> dict[str, int]:
    """How many validate_node processes each of these subscriptions has."""
    counts = dict.fromkeys(map(str, subscription_ids), 0)
    for sid in ProcessSubscription.objects.filter(process__workflow__name="validate_node").values_list(
            "subscription_id", flat=True):
        if str(sid) in counts:
            counts[str(sid)] += 1
    return counts


def batch_rows(task: Process) -> list[tuple[str, dict[str, Any]]]:
    """The task's log rows of the validation step: (status, state), one per run."""
    rows = ProcessStep.objects.filter(process=task, name=STEP).order_by("id")
    return [(row.status, row.state_after()) for row in rows]


def watch_starts(monkeypatch, then: Callable[[int, str], None] = lambda call, sid: None) -> list[str]:
    """Record every validation start (the subscription id) and call `then(call number, id)` before it."""
    from processes import services

    real = services.start_process
    seen: list[str] = []

    def start(name: str, *, subscription_id: Any = None, **kwargs: Any) -> Any:
        seen.append(str(subscription_id))
        then(len(seen), str(subscription_id))
        return real(name, subscription_id=subscription_id, **kwargs)

    monkeypatch.setattr(services, "start_process", start)
    return seen


def in_another_connection(work: Callable[[], Any]) -> Any:
    """Run `work` in a thread of its own, so on a database connection (and transaction) of its own."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    return result[0]


def locked(subscription_ids: Iterable[str]) -> set[str]:
    """Those of these subscriptions whose row some transaction holds (SELECT ... FOR UPDATE NOWAIT refused)."""
    def probe() -> set[str]:
        held = set()
        for sid in subscription_ids:
            try:
                with transaction.atomic():
                    list(Subscription.objects.select_for_update(nowait=True).filter(pk=sid))
            except DatabaseError:
                held.add(sid)
        return held

    return in_another_connection(probe)


def test_five_batches_each_logged_on_its_own_with_running_totals(catalogue, settings):
    settings.ORCHESTRATOR = {"VALIDATION_BATCH_SIZE": 3}
    ids = nodes(13)

    task = start_process("task_validate_subscriptions")

    assert task.status == "completed"
    rows = batch_rows(task)
    assert [status for status, _ in rows] == ["success"] * 5  # 3 + 3 + 3 + 3 + 1
    assert [state["validations_started"] for _, state in rows] == [3, 6, 9, 12, 13]
    assert [state["validation_cursor"] for _, state in rows] == [ids[2], ids[5], ids[8], ids[11], ids[12]]
    assert (current_state(task)["validations_started"], current_state(task)["validations_refused"]) == (13, 0)
    assert validations(ids) == dict.fromkeys(ids, 1)


def test_while_a_batch_runs_the_subscriptions_of_the_batch_before_are_not_locked(catalogue, settings, monkeypatch):
    settings.ORCHESTRATOR = {"VALIDATION_BATCH_SIZE": 3}
    ids = nodes(7)
    seen_locked: list[set[str]] = []

    def probe(call: int, sid: str) -> None:
        if call == 5:  # batch 2, its first validation started (not committed), its second about to start
            seen_locked.append(locked(ids))

    watch_starts(monkeypatch, probe)

    task = start_process("task_validate_subscriptions")

    assert task.status == "completed"
    # Batch 1 committed: its subscriptions are free. Batch 2's first start holds its subscription's row
    # until batch 2 commits (the probe sees locks), and nothing else is held.
    assert seen_locked == [{ids[3]}]
    assert validations(ids) == dict.fromkeys(ids, 1)


def test_a_subscription_created_meanwhile_is_validated_only_when_its_id_comes_after_the_cursor(
    catalogue, settings, monkeypatch
):
    settings.ORCHESTRATOR = {"VALIDATION_BATCH_SIZE": 3}
    ids = nodes(9, first=100)
    created: list[str] = []

    def create_two(call: int, sid: str) -> None:
        if call == 4:  # batch 2 runs; two nodes become active elsewhere, committed at once
            created.extend(in_another_connection(lambda: nodes(1, first=1) + nodes(1, first=1000)))

    seen = watch_starts(monkeypatch, create_two)

    task = start_process("task_validate_subscriptions")

    before, after = created
    assert task.status == "completed"
    assert seen == [*ids, after]  # id order; the one before the cursor waits for the next night
    assert validations([*ids, before, after]) == {**dict.fromkeys(ids, 1), before: 0, after: 1}
    assert current_state(task)["validations_started"] == 10


def test_refusals_are_counted_over_all_batches_keeping_at_most_max_ids(catalogue, settings, monkeypatch):
    settings.ORCHESTRATOR = {"VALIDATION_BATCH_SIZE": 2}
    monkeypatch.setattr("processes.system_tasks.MAX_IDS_IN_STATE", 2)
    ids = nodes(7)
    out_of_sync = {ids[0], ids[3], ids[4], ids[6]}  # in batches 1, 2, 3 and 4

    def refuse(call: int, sid: str) -> None:
        if sid in out_of_sync:  # as if another process took it between the batch's query and its start
            raise SubscriptionOutOfSync(f"subscription {sid} is out of sync")

    watch_starts(monkeypatch, refuse)

    task = start_process("task_validate_subscriptions")

    assert task.status == "completed"
    state = current_state(task)
    assert (state["validations_started"], state["validations_refused"]) == (3, 4)
    assert state["refused_subscriptions"] == [ids[0], ids[3]]
    assert len(batch_rows(task)) == 4
    assert validations(ids) == {sid: 0 if sid in out_of_sync else 1 for sid in ids}


def test_a_failure_in_batch_3_fails_the_task_and_retry_continues_at_batch_3(catalogue, settings, monkeypatch):
    settings.ORCHESTRATOR = {"VALIDATION_BATCH_SIZE": 3}
    ids = nodes(12)
    failures = [RuntimeError("the database of the validation service is down")]

    def fail_once(call: int, sid: str) -> None:
        if sid == ids[7] and failures:  # batch 3, after its first start
            raise failures.pop()

    seen = watch_starts(monkeypatch, fail_once)

    task = start_process("task_validate_subscriptions")

    assert task.status == "failed"
    assert [status for status, _ in batch_rows(task)] == ["success", "success", "failed"]
    # Batches 1 and 2 stay committed; batch 3's first start went with its failure.
    assert validations(ids) == {sid: 1 if n < 6 else 0 for n, sid in enumerate(ids)}
    seen.clear()

    retried = retry_process(task.process_id)

    assert retried.status == "completed"
    assert seen == ids[6:]  # batch 3 from its start, then batch 4: batches 1 and 2 were not repeated
    assert validations(ids) == dict.fromkeys(ids, 1)
    state = current_state(retried)
    assert (state["validations_started"], state["validations_refused"]) == (12, 0)
    assert [status for status, _ in batch_rows(retried)] == ["success", "success", "failed", "success", "success"]
