"""Parallel branches: each branch of a workflow's parallel step runs as a child process from the state at that step,
and the process goes on with every branch's changes merged in; branches that disagree fail the step."""

from __future__ import annotations

import pytest

from processes.engine import current_state
from processes.models import Process
from processes.services import retry_process, start_process
from tests.processes import compose_flows
from tests.processes.compose_flows import effects
from tests.processes.conftest import log
from workflows.compose import parallel, subprocesses
from workflows.dsl import begin, done, inputstep
from workflows.errors import WorkflowNotStartable
from workflows.registry import get_workflow, unregister, workflow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def reset_compose_flows():
    compose_flows.FAILING.clear()
    yield
    compose_flows.FAILING.clear()


def branches(parent) -> list[Process]:
    return list(Process.objects.filter(parent=parent).order_by("child_index").select_related("workflow"))


def test_both_branches_run_as_children_and_the_process_goes_on_with_both_their_changes():
    parent = start_process("t_link_ends", user_input={"tag": "link1"}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "completed"
    kids = branches(parent)
    assert [(k.workflow.name, k.status) for k in kids] == [
        ("t_link_ends.parallel1.1", "completed"), ("t_link_ends.parallel1.2", "completed")]
    assert [n for n, _ in log(kids[0])] == ["Start", "Configure the A end", "Check the A end", "Done"]
    assert [n for n, _ in log(kids[1])] == ["Start", "Configure the B end", "Done"]
    state = current_state(parent)
    assert (state["a_end"], state["a_checked"], state["b_end"], state["both"]) == ("configured", True, "configured",
                                                                                   True)
    assert state["process_id"] == str(parent.process_id)  # the branches' own ids do not leak into it
    assert [effects(f"{what}-link1") for what in ("a-end", "b-end", "both")] == [1, 1, 1]
    # Each branch started from the state the process had at the parallel step.
    assert current_state(kids[1])["tag"] == "link1"


def test_branches_that_set_one_key_to_different_values_fail_the_step_and_name_the_key():
    parent = start_process("t_branches_disagree", user_input={"tag": "paint"}, by="alice")
    parent.refresh_from_db()

    assert parent.status == "failed"
    assert "branches 1 and 2 both set 'colour', to different values" in parent.failed_reason
    assert "colour" not in current_state(parent)


def test_a_failed_branch_leaves_the_process_waiting_and_retrying_the_branch_completes_it():
    compose_flows.FAILING.add(-1)  # the B end refuses
    parent = start_process("t_link_ends", user_input={"tag": "link2"}, by="alice")

    assert Process.objects.get(pk=parent.pk).status == "awaiting_children"
    a_branch, b_branch = branches(parent)
    assert (a_branch.status, b_branch.status) == ("completed", "failed")
    assert "the B end refused the configuration" in b_branch.failed_reason

    compose_flows.FAILING.clear()
    retry_process(b_branch.process_id, by="ops")

    parent.refresh_from_db()
    assert parent.status == "completed"
    assert effects("a-end-link2") == 1
    assert effects("b-end-link2") == 1  # the failed try's write rolled back with its step
    assert effects("both-link2") == 1


def test_an_aborted_branch_the_code_no_longer_has_is_not_started_again_and_the_retry_says_why():
    from processes.services import abort_process

    compose_flows.FAILING.add(-1)
    parent = start_process("t_link_ends", user_input={"tag": "link3"}, by="alice")
    b_branch = branches(parent)[1]
    abort_process(b_branch.process_id, by="ops", reason="wrong far end")
    assert Process.objects.get(pk=parent.pk).status == "failed"
    # As if it had been the third branch of a version with three, and a deploy since left two.
    Process.objects.filter(pk=b_branch.pk).update(child_index=2)

    retry_process(parent.process_id, by="ops")

    parent.refresh_from_db()
    assert parent.status == "failed"
    assert ("cannot start branch 3 again: the parallel step 'Configure both ends' has 2 branch(es) now; abort the "
            "process and start a new one") in parent.failed_reason
    assert len(branches(parent)) == 2  # nothing new was started


def test_a_branch_workflow_is_not_listed_and_cannot_be_started_by_itself(staff_api):
    with pytest.raises(WorkflowNotStartable, match="is a branch of a parallel step of t_link_ends"):
        start_process("t_link_ends.parallel1.1", by="alice")
    names = [item["name"] for item in staff_api.get("/api/workflows/", {"page_size": 500}).json()["results"]]
    assert "t_link_ends" in names
    assert not [name for name in names if ".parallel" in name]
    assert get_workflow("t_link_ends.parallel1.2").branch_of == "t_link_ends"


def test_parallel_and_subprocesses_refuse_what_cannot_work_when_declared():
    from tests.processes.compose_flows import ConfirmForm, configure_a

    with pytest.raises(TypeError, match="two or more branches, got 1"):
        parallel(configure_a)

    @inputstep("Ask", form=ConfirmForm)
    def ask() -> dict:
        return {}

    with pytest.raises(TypeError, match="branch 2 has <input 'Ask'>: a branch runs unattended"):
        parallel(configure_a, ask)
    with pytest.raises(TypeError, match="branch 2 has <done 'Done'>"):
        parallel(configure_a, done)
    with pytest.raises(TypeError, match="branch 1: cannot chain"):
        parallel(lambda: None, configure_a)
    with pytest.raises(TypeError, match="inputs_from_state must be a plain function"):
        subprocesses("t_child_item", configure_a)
    with pytest.raises(TypeError, match="takes a workflow"):
        subprocesses("", lambda: [])
    with pytest.raises(TypeError, match="result_key must be a non-empty name"):
        subprocesses("t_child_item", lambda: [], result_key="")


def test_two_parallel_steps_in_one_workflow_get_branch_workflows_of_their_own():
    try:
        @workflow("Composition test: two parallel steps")
        def t_two_parallels():
            from tests.processes.compose_flows import check_a, configure_a, configure_b, set_blue, set_red

            return begin >> parallel(configure_a, configure_b) >> parallel(set_red >> check_a, set_blue, name="Paint")

        steps = get_workflow("t_two_parallels").steps
        assert [s.children.branch_workflows for s in steps if s.children] == [
            ("t_two_parallels.parallel1.1", "t_two_parallels.parallel1.2"),
            ("t_two_parallels.parallel2.1", "t_two_parallels.parallel2.2")]
        assert steps[1].name == "Parallel: Configure the A end | Configure the B end"
        assert get_workflow("t_two_parallels.parallel2.1").steps.names == [
            "Start", "Set the colour to red", "Check the A end", "Done"]
    finally:
        for name in ("t_two_parallels", "t_two_parallels.parallel1.1", "t_two_parallels.parallel1.2",
                     "t_two_parallels.parallel2.1", "t_two_parallels.parallel2.2"):
            unregister(name)
