"""Sub-processes: one child process per item, linked to the parent, which waits holding no worker and goes on with
the children's results once every child ended; failed children, retries, skips, aborts, and racing joins."""

from __future__ import annotations

import threading
import time

import pytest

from processes import joins
from processes.engine import current_state, run_process
from processes.errors import WrongProcessStatus
from processes.executors import threadpool
from processes.models import Process, ProcessLease, ProcessStep
from processes.services import (
    abort_process,
    delete_task,
    resume_process,
    retry_process,
    skip_step,
    start_process,
)
from subscriptions.models import Subscription
from tests.processes import compose_flows
from tests.processes.compose_flows import effects
from tests.processes.conftest import log, new_active_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def reset_compose_flows():
    compose_flows.FAILING.clear()
    compose_flows.MEET.update(barrier=None, items=None)
    yield
    compose_flows.FAILING.clear()
    compose_flows.MEET.update(barrier=None, items=None)


def children(parent) -> list[Process]:
    return list(Process.objects.filter(parent=parent).order_by("child_index", "child_round"))


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def test_twenty_children_all_complete_and_their_results_are_merged_in_item_order():
    parent = start_process("t_fan_out", user_input={"count": 20, "tag": "twenty"}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "completed"
    kids = children(parent)
    assert [k.child_index for k in kids] == list(range(20))
    assert {(k.status, k.parent_step, k.child_round, k.workflow.name) for k in kids} == {
        ("completed", 1, 1, "t_child_item")}
    assert {k.created_by for k in kids} == {"alice"}  # children act for whoever the parent ran for
    assert [effects(f"child-twenty-{i}") for i in range(20)] == [1] * 20
    assert effects("parent-twenty") == 1
    state = current_state(parent)
    assert [r["doubled"] for r in state["items"]] == [2 * i for i in range(20)]
    assert [r["process_id"] for r in state["items"]] == [str(k.process_id) for k in kids]
    assert state["total"] == sum(2 * i for i in range(20))
    assert log(parent) == [("Start", "success"), ("Work on every item", "awaiting_children"),
                           ("Work on every item", "success"), ("Add up the children's results", "success"),
                           ("Done", "complete")]
    started = ProcessStep.objects.get(process=parent, status="awaiting_children")
    assert started.error == "started 20 child process(es)"


@pytest.mark.requires_postgres
def test_children_run_in_parallel_on_the_thread_pool_and_the_parent_continues_by_itself(settings, monkeypatch):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 4}
    monkeypatch.setenv("COMPOSE_TEST_CHILD_SECONDS", "0.2")
    try:
        began = time.monotonic()
        parent = start_process("t_fan_out", user_input={"count": 8, "tag": "pool"}, by="alice")
        wait_until(lambda: Process.objects.get(pk=parent.pk).status == "completed", "the parent's completion")
        elapsed = time.monotonic() - began
    finally:
        threadpool.shutdown(wait=True)

    assert current_state(parent)["total"] == sum(2 * i for i in range(8))
    assert [effects(f"child-pool-{i}") for i in range(8)] == [1] * 8
    # 8 children of 0.2 s each, one after another, would take 1.6 s; on 4 threads they overlap.
    assert elapsed < 1.5, f"the children did not run in parallel ({elapsed:.2f} s)"


@pytest.mark.requires_postgres
def test_each_child_of_a_fan_out_is_created_and_linked_in_one_statement(monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counted: list[int] = []
    real_start = joins._start

    def counting_start(*args, **kwargs):
        with CaptureQueriesContext(connection) as queries:
            real_start(*args, **kwargs)
        counted.append(len(queries.captured_queries))

    monkeypatch.setattr(joins, "_start", counting_start)
    for count in (10, 30):
        parent = start_process("t_fan_out", user_input={"count": count, "tag": f"cost{count}"}, by="alice")
        assert Process.objects.get(pk=parent.pk).status == "completed"
    # 20 more children, 20 more statements: no savepoint, link update or lookup per child.
    assert counted[1] - counted[0] == 20, counted


def test_no_children_for_an_empty_list_the_step_succeeds_with_no_results():
    parent = start_process("t_fan_out", user_input={"count": 0, "tag": "none"}, by="alice")
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert children(parent) == []
    assert current_state(parent)["items"] == []


def test_a_failed_child_leaves_the_parent_waiting_and_retrying_the_child_completes_the_parent():
    compose_flows.FAILING.add(3)
    parent = start_process("t_fan_out", user_input={"count": 5, "tag": "fail"}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "awaiting_children"
    assert not ProcessLease.objects.filter(process=parent).exists()  # waiting holds no worker
    kids = children(parent)
    assert [k.status for k in kids] == ["completed", "completed", "completed", "failed", "completed"]
    assert "the device for item 3 did not answer" in kids[3].failed_reason
    with pytest.raises(WrongProcessStatus, match="awaits its child processes"):
        retry_process(parent.process_id, by="ops")

    compose_flows.FAILING.clear()
    retry_process(kids[3].process_id, by="ops")

    parent.refresh_from_db()
    assert parent.status == "completed"
    assert [effects(f"child-fail-{i}") for i in range(5)] == [1] * 5
    assert effects("parent-fail") == 1
    assert current_state(parent)["total"] == 20
    assert len(children(parent)) == 5  # the retry ran the same child again: no new child


def test_skipping_the_failed_childs_step_lets_the_parent_go_on():
    compose_flows.FAILING.add(1)
    parent = start_process("t_fan_out", user_input={"count": 3, "tag": "skip"}, by="alice")
    failed = children(parent)[1]
    assert failed.status == "failed"

    skip_step(failed.process_id, by="ops", reason="item 1's device was replaced by hand")

    parent.refresh_from_db()
    assert parent.status == "completed"
    assert current_state(parent)["total"] == 0 + 4  # item 1 added nothing
    assert effects("child-skip-1") == 0


def test_aborting_the_parent_aborts_its_unfinished_children_and_keeps_the_completed_ones():
    parent = start_process("t_fan_out_confirm", user_input={"count": 4, "tag": "abort"}, by="alice")
    kids = children(parent)
    assert [k.status for k in kids] == ["suspended"] * 4
    resume_process(kids[0].process_id, {"confirm": True}, by="bob")
    assert Process.objects.get(pk=parent.pk).status == "awaiting_children"

    abort_process(parent.process_id, by="ops", reason="the change window closed")

    parent.refresh_from_db()
    assert parent.status == "aborted"
    kids = children(parent)
    assert [k.status for k in kids] == ["completed", "aborted", "aborted", "aborted"]
    for kid in kids[1:]:
        assert kid.failed_reason == (f"aborted by ops: its parent process {parent.process_id} was aborted "
                                     f"(the change window closed)")
    assert effects("child-abort-0") == 1
    assert sum(effects(f"child-abort-{i}") for i in (1, 2, 3)) == 0
    assert effects("parent-abort") == 0


def test_an_aborted_child_fails_the_parent_and_a_retry_starts_a_new_child_for_that_item_only():
    parent = start_process("t_fan_out_confirm", user_input={"count": 3, "tag": "redo"}, by="alice")
    first = children(parent)
    abort_process(first[1].process_id, by="ops", reason="wrong port")
    for kid in (first[0], first[2]):
        resume_process(kid.process_id, {"confirm": True}, by="bob")

    parent.refresh_from_db()
    assert parent.status == "failed"
    assert "1 child process(es) aborted (item(s) 2; item 2, process" in parent.failed_reason
    assert "aborted by ops: wrong port" in parent.failed_reason

    retry_process(parent.process_id, by="ops")
    parent.refresh_from_db()
    assert parent.status == "awaiting_children"
    kids = children(parent)
    assert [(k.child_index, k.child_round, k.status) for k in kids] == [
        (0, 1, "completed"), (1, 1, "aborted"), (1, 2, "suspended"), (2, 1, "completed")]
    assert current_state(kids[2])["item"] == 1  # the new child got the aborted one's input

    resume_process(kids[2].process_id, {"confirm": True}, by="bob")
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert [effects(f"child-redo-{i}") for i in range(3)] == [1, 1, 1]
    assert [r["process_id"] for r in current_state(parent)["items"]] == [
        str(kids[0].process_id), str(kids[2].process_id), str(kids[3].process_id)]


def test_more_items_than_max_children_per_step_fail_the_step_saying_so_and_start_no_child(settings):
    settings.ORCHESTRATOR = {"MAX_CHILDREN_PER_STEP": 5}
    parent = start_process("t_fan_out", user_input={"count": 6, "tag": "many"}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "failed"
    assert ("inputs_from_state returned 6 items, and a step starts at most MAX_CHILDREN_PER_STEP=5 child "
            "processes") in parent.failed_reason
    assert children(parent) == []
    settings.ORCHESTRATOR = {"MAX_CHILDREN_PER_STEP": 6}
    retry_process(parent.process_id, by="ops")
    assert Process.objects.get(pk=parent.pk).status == "completed"


def test_an_item_the_child_workflow_refuses_fails_the_parent_step_and_starts_no_child():
    parent = start_process("t_fan_out", user_input={"count": 3, "tag": "t" * 31}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "failed"
    assert "cannot start the child for item 1 (1 of 3, workflow t_child_item)" in parent.failed_reason
    assert "parent_tag" in parent.failed_reason
    assert children(parent) == []
    retry_process(parent.process_id, by="ops")  # still refused: the same items
    assert children(parent) == []


def test_each_child_holds_its_own_subscription_and_a_held_one_refuses_the_whole_step(catalogue):
    nodes = [new_active_node(f"rtr-{i}") for i in range(3)]
    parent = start_process("t_rename_nodes", user_input={"node_ids": [str(n.subscription_id) for n in nodes]},
                           by="alice")
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert current_state(parent)["renames"] == ["renamed-0", "renamed-1", "renamed-2"]
    for kid, node in zip(children(parent), nodes, strict=True):
        assert list(kid.process_subscriptions.values_list("subscription_id", flat=True)) == [node.subscription_id]
        renamed = Subscription.objects.get(pk=node.pk)
        assert renamed.insync
    # Another process holds the second node: the parent's step starts no child at all, and says why.
    start_process("t_hold_node", subscription_id=nodes[1].subscription_id, by="carol")
    parent = start_process("t_rename_nodes", user_input={"node_ids": [str(n.subscription_id) for n in nodes]},
                           by="alice")
    parent.refresh_from_db()
    assert parent.status == "failed"
    assert "cannot start the child for item 2 (2 of 3, workflow t_child_rename)" in parent.failed_reason
    assert "no child was started" in parent.failed_reason
    assert children(parent) == []


@pytest.mark.requires_postgres
def test_two_parents_fanning_out_over_the_same_nodes_in_opposite_orders_never_deadlock_in_50_rounds(catalogue):
    """Both parents' children steps run at once and want the same four nodes, one in the other's reverse
    order. The step locks all its items' subscriptions in one statement, in id order, before it starts a
    child: the second waits for the first, then finds the nodes held by the first's children and says so.
    Locking item by item, each would hold what the other wants next: a deadlock, and a misleading "busy"."""
    from django.db import connection

    for round_ in range(50):
        nodes = [new_active_node(f"r{round_}-{i}") for i in range(4)]
        ids = [str(n.subscription_id) for n in nodes]
        compose_flows.MEET["items"] = threading.Barrier(2)
        started: dict[str, Process] = {}
        errors: list[BaseException] = []

        def start(who: str, order: list[str], started=started, errors=errors) -> None:
            try:
                started[who] = start_process("t_rename_nodes_met", user_input={"node_ids": order}, by=who)
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=start, args=("alice", ids)),
                   threading.Thread(target=start, args=("bob", ids[::-1]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors and len(started) == 2, (round_, errors)

        parents = [Process.objects.get(pk=p.pk) for p in started.values()]
        completed = [p for p in parents if p.status == "completed"]
        assert completed, (round_, [p.failed_reason for p in parents])
        for parent in parents:
            if parent.status == "failed":
                assert "no child was started" in parent.failed_reason, (round_, parent.failed_reason)
                assert children(parent) == []
                # The holder is named: one of the other parent's children, not a "busy" or a deadlock.
                other_kids = {str(k.process_id) for p in completed for k in children(p)}
                assert any(kid in parent.failed_reason for kid in other_kids), (round_, parent.failed_reason)
            else:
                assert [k.status for k in children(parent)] == ["completed"] * 4
        # Each node was renamed by each parent that completed: once, or twice one after the other.
        for node in nodes:
            renames = Process.objects.filter(parent__in=completed, process_subscriptions__subscription=node)
            assert renames.count() == len(completed), round_
            assert Subscription.objects.get(pk=node.pk).insync


@pytest.mark.requires_postgres
def test_a_children_step_that_cannot_lock_its_items_in_time_fails_saying_so_and_its_retry_starts_them(
        catalogue, settings):
    """A step elsewhere holds one of the items' subscription rows longer than LOCK_WAIT_SECONDS: the parent's
    step gives up waiting, says why, and starts no child; a retry once the row is free starts them all once."""
    import psycopg

    from tests.processes.test_engine_crash import database_url

    settings.ORCHESTRATOR = {"LOCK_WAIT_SECONDS": 0.3}
    nodes = [new_active_node(f"busy-{i}") for i in range(3)]
    with psycopg.connect(database_url()) as other:  # another worker's step, in the middle of its transaction
        other.execute("SELECT 1 FROM subscriptions_subscription WHERE subscription_id = %s FOR UPDATE",
                      [nodes[2].subscription_id])
        parent = start_process("t_rename_nodes", user_input={"node_ids": [str(n.subscription_id) for n in nodes]},
                               by="alice")
        parent.refresh_from_db()
        assert parent.status == "failed"
        assert ("cannot start the children (3, workflow t_child_rename): one of the 3 subscriptions of these "
                "items, or a subscription related to one of them, is being changed by a running step right now; "
                "try again in a moment; no child was started") in parent.failed_reason
        assert children(parent) == []
        other.rollback()

    retry_process(parent.process_id, by="ops")

    parent.refresh_from_db()
    assert parent.status == "completed"
    assert [k.child_index for k in children(parent)] == [0, 1, 2]
    assert current_state(parent)["renames"] == ["renamed-0", "renamed-1", "renamed-2"]


def test_a_parent_holding_a_node_fans_out_to_its_ports_which_another_process_could_not_touch(active_node,
                                                                                             active_port):
    """The node's own process is no stranger to its ports' children: its hold on the node does not keep them
    off its ports; anyone else's hold does, as for any start."""
    from processes.models import ProcessSubscription
    from workflows.errors import SubscriptionOutOfSync

    # Without a parent, a start on the port while a process holds its node is refused.
    holder = start_process("t_hold_node", subscription_id=active_node.pk, by="carol")
    with pytest.raises(SubscriptionOutOfSync, match="related subscriptions in use"):
        start_process("t_child_port", subscription_id=active_port.pk, user_input={"note": "x"}, by="dave")
    abort_process(holder.process_id, by="carol")
    Subscription.objects.filter(pk=active_node.pk).update(insync=True)  # as staff would after that abort

    parent = start_process("t_move_ports", subscription_id=active_node.pk,
                           user_input={"port_ids": [str(active_port.pk)]}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "completed", parent.failed_reason
    assert current_state(parent)["ports"] == ["Port rtr-1 xe-0/0/0 (moved)"]
    assert Subscription.objects.get(pk=active_port.pk).description == "Port rtr-1 xe-0/0/0 (moved)"
    kid = children(parent)[0]
    assert ProcessSubscription.objects.get(process=kid).subscription_id == active_port.pk
    assert Subscription.objects.get(pk=active_node.pk).insync  # the parent gave the node back at its end
    assert Subscription.objects.get(pk=active_port.pk).insync


@pytest.mark.requires_postgres
def test_two_last_children_ending_at_once_wake_the_parent_exactly_once_in_50_rounds(settings):
    """The join under a race: both children's final transactions count the unfinished siblings at the same
    moment; the parent's row lock orders them, so exactly one finds none left and wakes the parent."""
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    for round_ in range(50):
        parent = start_process("t_fan_out", user_input={"count": 2, "tag": f"race{round_}"}, by="alice")
        run_process(parent.process_id)
        assert Process.objects.get(pk=parent.pk).status == "awaiting_children"
        compose_flows.MEET["barrier"] = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(child_id, errors=errors):
            try:
                run_process(child_id)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                from django.db import connection

                connection.close()

        threads = [threading.Thread(target=run, args=(k.process_id,)) for k in children(parent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert [k.status for k in children(parent)] == ["completed", "completed"], f"round {round_}"
        parent.refresh_from_db()
        assert parent.status == "running", f"round {round_}: the parent was not woken ({parent.status})"
        lease = ProcessLease.objects.get(process=parent)
        assert lease.queued, f"round {round_}"
        run_process(parent.process_id)
        parent.refresh_from_db()
        assert parent.status == "completed", f"round {round_}"
        assert effects(f"parent-race{round_}") == 1
        assert [n for n, s in log(parent)].count("Work on every item") == 2  # started, then joined once


def test_the_sweep_wakes_a_parent_whose_join_was_missed_and_aborts_children_of_an_aborted_parent(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    parent = start_process("t_fan_out", user_input={"count": 2, "tag": "mend"}, by="alice")
    run_process(parent.process_id)
    for kid in children(parent):
        run_process(kid.process_id)
    # As if the join had been missed: put the parent back to waiting after it was woken.
    assert Process.objects.get(pk=parent.pk).status == "running"
    Process.objects.filter(pk=parent.pk).update(status="awaiting_children")
    ProcessLease.objects.filter(process=parent).delete()

    assert joins.sweep() == [parent.process_id]
    assert Process.objects.get(pk=parent.pk).status == "running"
    assert ProcessLease.objects.get(process=parent).queued
    assert joins.sweep() == []  # nothing more to mend

    other = start_process("t_fan_out", user_input={"count": 2, "tag": "orphans"}, by="alice")
    run_process(other.process_id)
    # As if the parent's abort had committed and its process died before the cascade reached the children.
    Process.objects.filter(pk=other.pk).update(status="aborted")
    assert sorted(joins.sweep()) == sorted(k.process_id for k in children(other))
    assert [k.status for k in children(other)] == ["aborted", "aborted"]
    assert joins.sweep() == []


def test_a_parent_awaiting_children_cannot_be_skipped_or_retried_but_its_children_say_why():
    compose_flows.FAILING.add(0)
    parent = start_process("t_fan_out", user_input={"count": 1, "tag": "refuse"}, by="alice")
    with pytest.raises(WrongProcessStatus):
        skip_step(parent.process_id, by="ops", reason="no")
    with pytest.raises(WrongProcessStatus, match="retry \\(or skip the step of\\) a failed child instead"):
        retry_process(parent.process_id, by="ops")
    assert Process.objects.get(pk=parent.pk).status == "awaiting_children"


@pytest.mark.requires_postgres
def test_an_abort_asked_for_while_the_children_step_runs_aborts_the_parent_and_its_new_children(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    hold = compose_flows.HOLD
    hold["inside"].clear()
    hold["release"].clear()
    parent = start_process("t_fan_out_held", user_input={"count": 3, "tag": "late"}, by="alice")
    runner = threading.Thread(target=lambda: (run_process(parent.process_id), _close()))
    runner.start()
    try:
        assert hold["inside"].wait(30)
        answer = abort_process(parent.process_id, by="ops", reason="wrong node")
        assert answer.abort_pending  # a step holds the process: aborted at its end
    finally:
        hold["release"].set()
        runner.join(30)

    parent.refresh_from_db()
    assert parent.status == "aborted"
    assert parent.failed_reason == "aborted by ops: wrong node"
    kids = children(parent)
    assert len(kids) == 3  # created with the step, which committed: then aborted with their parent
    assert {k.status for k in kids} == {"aborted"}
    assert not ProcessLease.objects.filter(process__in=[parent, *kids]).exclude(owner="").exists()


def test_an_abort_request_left_on_a_waiting_process_is_carried_out_by_the_sweep(settings):
    """The request that lands just after the step let its run record go makes a record of its own."""
    from django.utils import timezone

    from processes.recovery import recover_stalled_processes

    parent = start_process("t_fan_out_confirm", user_input={"count": 1, "tag": "asked"}, by="alice")
    assert Process.objects.get(pk=parent.pk).status == "awaiting_children"
    ProcessLease.objects.create(process_id=parent.pk, owner="", expires_at=timezone.now(),
                                abort_requested_at=timezone.now(), abort_requested_by="ops", abort_reason="late")

    assert recover_stalled_processes() == [parent.process_id]
    assert Process.objects.get(pk=parent.pk).status == "aborted"
    assert [k.status for k in children(parent)] == ["aborted"]


def _close() -> None:
    from django.db import connection

    connection.close()


def test_a_waiting_parent_run_again_recovered_or_retried_starts_no_child_again(settings):
    """After the children step committed (its worker may die right after), nothing runs that step again."""
    from processes.recovery import recover_stalled_processes

    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    parent = start_process("t_fan_out", user_input={"count": 4, "tag": "once"}, by="alice")
    run_process(parent.process_id)
    assert Process.objects.get(pk=parent.pk).status == "awaiting_children"
    made = sorted(Process.objects.filter(parent=parent).values_list("process_id", flat=True))

    run_process(parent.process_id)  # a duplicated or redelivered message
    assert recover_stalled_processes() == []
    with pytest.raises(WrongProcessStatus):
        retry_process(parent.process_id, by="ops")

    assert sorted(Process.objects.filter(parent=parent).values_list("process_id", flat=True)) == made
    assert [n for n, _ in log(parent)] == ["Start", "Work on every item"]


def test_the_database_refuses_a_second_child_for_one_item_of_one_round():
    from django.db import IntegrityError

    from tests.factories import ProcessFactory

    parent = start_process("t_fan_out_confirm", user_input={"count": 1, "tag": "unique"}, by="alice")
    first = children(parent)[0]
    with pytest.raises(IntegrityError):
        ProcessFactory(parent=parent, parent_step=first.parent_step, child_index=0, child_round=1)


def test_a_child_task_is_never_deleted_alone_and_a_parent_task_only_with_every_child_finished():
    from orchestrator_site.errors import Conflict

    parent = start_process("t_task_fan_out", user_input={"count": 3, "tag": "del"}, by="alice")
    kids = children(parent)
    resume_process(kids[0].process_id, {"confirm": True}, by="bob")
    done = Process.objects.get(pk=kids[0].pk)
    assert done.status == "completed" and done.is_task

    # A finished child is part of its waiting parent's record: deleting it would merge two items, not three.
    with pytest.raises(Conflict, match=f"it is child 1 of process {parent.process_id}, part of that process's"):
        delete_task(done.process_id, by="ops")
    abort_process(parent.process_id, by="ops", reason="not today")
    assert [k.status for k in children(parent)] == ["completed", "aborted", "aborted"]
    with pytest.raises(Conflict, match="it is child 2 of process"):
        delete_task(kids[1].process_id, by="ops")
    assert Process.objects.filter(parent=parent).count() == 3

    # A child that is still waiting keeps its finished parent from being deleted (with it, by the cascade).
    Process.objects.filter(pk=kids[2].pk).update(status="suspended")
    with pytest.raises(Conflict, match=f"1 of its child processes \\(such as {kids[2].process_id}\\) are not finished"):
        delete_task(parent.process_id, by="ops")
    Process.objects.filter(pk=kids[2].pk).update(status="aborted")

    delete_task(parent.process_id, by="ops")
    assert not Process.objects.filter(pk__in=[parent.pk, *(k.pk for k in kids)]).exists()
    assert not ProcessStep.objects.filter(process_id__in=[parent.pk, *(k.pk for k in kids)]).exists()
