"""The execution contract: one transaction per step, failures leave no trace, retry from the last state."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from processes.engine import current_state
from processes.errors import IncompatibleWorkflowChange, WrongProcessStatus
from processes.models import Process, ProcessStep
from processes.services import abort_process, retry_process, start_process
from subscriptions.models import Subscription
from tests.processes import flows
from tests.processes.conftest import effects, log
from workflows.dsl import begin
from workflows.errors import SubscriptionOutOfSync
from workflows.registry import get_workflow, register, unregister, workflow

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def replaced_workflow(name: str, steps):
    """Declare `name` anew with other steps, as a deploy of changed code would, then put it back."""
    original = get_workflow(name)
    unregister(name)
    try:
        yield workflow(original.description, name=name)(steps)
    finally:
        unregister(name)
        register(original)


def test_a_failing_step_leaves_none_of_its_writes_and_retry_completes_from_the_last_state():
    flows.CONTROL["fail_times"] = 1

    process = start_process("t_writes", by="alice")

    pid = process.process_id
    assert process.status == "failed"
    # Step A committed with its log row; step B's write rolled back with it; C never ran.
    assert effects(f"a-{pid}") == [f"a-{pid}"]
    assert effects(f"b-{pid}") == []
    assert effects(f"c-{pid}") == []
    failed = ProcessStep.objects.filter(process=process).order_by("id").last()
    assert (failed.name, failed.status, failed.attempt) == ("Write B then maybe fail", "failed", 1)
    assert failed.error == "the external system said no"
    assert failed.error_type == "RuntimeError"
    assert "Traceback" in failed.traceback and "write_b_then_fail" in failed.traceback
    assert process.failed_reason == "Write B then maybe fail: the external system said no"
    # The failed row holds the state of the last successful step, which a retry starts from.
    assert failed.state_after()["a_written"] is True and "b_written" not in failed.state_after()

    retried = retry_process(pid, by="bob")

    assert retried.status == "completed"
    assert effects(f"a-{pid}") == [f"a-{pid}"]  # step A did not run again
    assert effects(f"b-{pid}") == [f"b-{pid}"]
    assert effects(f"c-{pid}") == [f"c-{pid}"]
    assert log(retried)[-4:] == [
        ("Write B then maybe fail", "failed"),
        ("Write B then maybe fail", "success"),
        ("Write C", "success"),
        ("Done", "complete"),
    ]
    assert ProcessStep.objects.filter(process=retried, name="Write B then maybe fail").order_by(
        "id").last().attempt == 2
    assert retried.failed_reason == ""
    # The steps run after the retry are logged as bob's, who retried it; the earlier ones stay alice's.
    assert [row[1] for row in ProcessStep.objects.filter(process=retried).order_by("id").values_list(
        "name", "created_by")] == ["alice", "alice", "alice", "bob", "bob", "bob"]


def test_retry_again_and_again_until_it_works():
    flows.CONTROL["fail_times"] = 3
    process = start_process("t_writes")

    for _ in range(3):
        process = retry_process(process.process_id)

    assert process.status == "completed"
    attempts = list(ProcessStep.objects.filter(process=process, name="Write B then maybe fail")
                    .order_by("id").values_list("status", "attempt"))
    assert attempts == [("failed", 1), ("failed", 2), ("failed", 3), ("success", 4)]
    assert effects(f"b-{process.process_id}") == [f"b-{process.process_id}"]


def test_every_step_is_logged_once_with_the_full_state_after_it():
    process = start_process("t_writes", by="carol")

    assert process.status == "completed"
    rows = list(ProcessStep.objects.filter(process=process).order_by("id"))
    assert [r.name for r in rows] == ["Start", "Write A", "Write B then maybe fail", "Write C", "Done"]
    first = rows[0].state_after()
    assert first["created_by"] == "carol" and first["process_id"] == str(process.process_id)
    assert rows[2].state_after()["a_written"] and rows[2].state_after()["b_written"]
    assert {"a_written", "b_written", "c_written"} <= set(rows[3].state_after())
    assert all(r.created_by == "carol" and r.completed_at >= r.started_at for r in rows)


def test_a_step_that_commits_fails_with_a_clear_message_and_its_write_is_undone():
    process = start_process("t_commit")

    assert process.status == "failed"
    failed = ProcessStep.objects.get(process=process, status="failed")
    assert "tried to commit" in failed.error
    assert "cannot commit part of its work" in failed.error
    assert effects(f"commit-{process.process_id}") == []


def test_a_non_serialisable_return_fails_the_step_naming_the_key():
    process = start_process("t_unserialisable")

    assert process.status == "failed"
    failed = ProcessStep.objects.get(process=process, status="failed")
    assert "'thing'" in failed.error
    assert "cannot be stored in the state" in failed.error
    assert "not JSON-serialisable" in failed.error


def test_a_missing_required_state_key_fails_the_step_naming_it():
    process = start_process("t_missing_key")

    assert process.status == "failed"
    failed = ProcessStep.objects.get(process=process, status="failed")
    assert "needs 'colour' from the state, but the state has no such key" in failed.error
    assert "process_id" in failed.error  # it lists what the state has


def test_parameters_come_from_state_by_name_with_defaults_and_the_whole_state():
    process = start_process("t_injection")

    state = current_state(process)
    assert state["size_seen"] == 3  # the default
    assert state["process_seen"] == str(process.process_id)
    assert "process_id" in state["keys_seen"]
    # The condition was false: the step is logged as skipped and did nothing.
    assert ("Big only", "skipped") in log(process)
    assert "big" not in state


def test_a_typed_domain_model_parameter_is_loaded_and_saved_with_its_step(active_node):
    process = start_process("t_rename_node", subscription_id=active_node.pk)

    assert process.status == "completed"
    stored = Subscription.objects.get(pk=active_node.pk)
    from workflows.node.products import NodeProduct

    assert NodeProduct.load(stored).node.node_name == "renamed"
    assert stored.insync is True
    # The state keeps the subscription's id, not its data.
    assert current_state(process)["subscription"] == str(active_node.pk)


def test_retrying_a_completed_process_is_refused():
    process = start_process("t_writes")

    with pytest.raises(WrongProcessStatus, match="it is completed"):
        retry_process(process.process_id)


def test_abort_logs_who_and_why_and_leaves_the_subscription_out_of_sync_visibly(active_node):
    process = start_process("modify_node", subscription_id=active_node.pk)
    assert process.status == "suspended"  # past unsync, waiting for input

    aborted = abort_process(process.process_id, by="dave", reason="customer cancelled")

    assert aborted.status == "aborted"
    row = ProcessStep.objects.filter(process=aborted).last()
    assert (row.name, row.status, row.created_by) == ("Abort", "abort", "dave")
    assert row.error == "aborted by dave: customer cancelled"
    assert aborted.failed_reason == "aborted by dave: customer cancelled"
    # The subscription stays out of sync, and a new start says so and that nobody holds it any more.
    assert Subscription.objects.get(pk=active_node.pk).insync is False
    with pytest.raises(SubscriptionOutOfSync, match="no unfinished process holds it"):
        start_process("t_rename_node", subscription_id=active_node.pk)
    with pytest.raises(WrongProcessStatus, match="already aborted"):
        abort_process(aborted.process_id)


def test_retry_after_an_incompatible_workflow_change_is_refused_saying_what_changed():
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes")
    assert process.status == "failed"
    with replaced_workflow("t_writes", lambda: begin >> flows.write_a >> flows.write_c):
        # The failed step was renamed in code while the process waited for a retry.
        with pytest.raises(IncompatibleWorkflowChange) as refused:
            retry_process(process.process_id)
        assert "step 3 was 'Write B then maybe fail', is now 'Write C'" in str(refused.value)
        assert Process.objects.get(pk=process.pk).status == "failed"  # nothing changed


def test_retry_after_a_change_to_later_steps_continues_with_the_new_version():
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes")
    # Only steps after the failed one changed: the process can go on, on the new version.
    with replaced_workflow(
        "t_writes", lambda: begin >> flows.write_a >> flows.write_b_then_fail >> flows.write_c >> flows.big_only
    ):
        retried = retry_process(process.process_id)
        assert retried.status == "completed"
        assert ("Big only", "success") in log(retried)
        assert retried.workflow_version[-2:] == ["Big only", "Done"]
