"""Input steps: a process waits suspended for input, refuses bad input without change, resumes with good."""

from __future__ import annotations

import pytest

from orchestrator_site.errors import InvalidInput
from processes.errors import WrongProcessStatus
from processes.models import InputState, Process, ProcessStep
from processes.services import resume_process, start_process
from tests.processes.conftest import log

pytestmark = pytest.mark.django_db(transaction=True)


def test_suspended_then_invalid_input_refused_then_valid_input_completes():
    process = start_process("t_input", by="alice")
    assert process.status == "suspended"
    assert log(process)[-1] == ("Choose a colour", "suspend")
    rows, inputs = ProcessStep.objects.count(), InputState.objects.count()

    with pytest.raises(InvalidInput) as refused:
        resume_process(process.process_id, {"colour": "purple"}, by="bob")
    assert "colour" in refused.value.errors
    assert '"purple" is not a valid choice.' in refused.value.errors["colour"][0]
    with pytest.raises(InvalidInput) as unknown:
        resume_process(process.process_id, {"colour": "red", "size": 3}, by="bob")
    assert "size" in unknown.value.errors
    assert Process.objects.get(pk=process.pk).status == "suspended"
    assert (ProcessStep.objects.count(), InputState.objects.count()) == (rows, inputs)

    resumed = resume_process(process.process_id, {"colour": "green"}, by="bob")

    assert resumed.status == "completed"
    assert ProcessStep.objects.filter(process=process, name="Needs a key").get().state_after()["seen"] == "green"
    given = InputState.objects.filter(process=process, input_type="user_input").get()
    assert (given.input, given.created_by, given.step_name) == ({"colour": "green"}, "bob", "Choose a colour")


def test_resuming_a_process_that_is_not_suspended_is_refused():
    process = start_process("t_writes")

    with pytest.raises(WrongProcessStatus, match="it is completed, not suspended"):
        resume_process(process.process_id, {"colour": "red"})


def test_the_node_modify_workflow_renames_the_node_through_its_input_step(active_node):
    from workflows.node.products import NodeProduct

    process = start_process("modify_node", subscription_id=active_node.pk)
    assert process.status == "suspended"

    process = resume_process(process.process_id, {"node_name": "rtr-renamed"})

    assert process.status == "completed"
    assert NodeProduct.load(active_node.pk).node.node_name == "rtr-renamed"
