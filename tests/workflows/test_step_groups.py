"""step_group in the DSL: one place in the workflow, its sub-steps kept in order, and its refusals at declaration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workflows.dsl import (
    StepKind,
    abort,
    begin,
    callback_step,
    conditional,
    done,
    sleep,
    step,
    step_group,
    sub_step_label,
)
from workflows.registry import all_workflows, unregister, workflow

PREFIX = "t_group_dsl_"


@pytest.fixture
def declared():
    """Names of workflows a test declares; each is unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        unregister(name)
    leaked = [name for name in all_workflows() if name.startswith(PREFIX)]
    for name in leaked:
        unregister(name)
    assert not leaked, f"a test declared workflows without listing them: {leaked}"


@step("One")
def one() -> dict:
    return {"one": 1}


@step("Two")
def two() -> dict:
    return {"two": 2}


def test_a_group_is_one_step_of_its_own_kind_holding_its_sub_steps_in_order():
    group = step_group("Both", begin >> one >> two)

    assert group.kind == StepKind.GROUP
    assert group.name == "Both"
    assert group.substeps.names == ["One", "Two"]
    assert sub_step_label(group, two) == "Both \u203a Two"
    assert step_group("Just one", one).substeps.names == ["One"]  # a single step is a group of one


def test_a_group_takes_one_place_in_the_workflow_and_its_version(declared):
    @workflow("DSL test: a group", name=f"{PREFIX}one_place")
    def flow():
        return begin >> step_group("Both", one >> two) >> one

    declared.append(flow.name)
    assert flow.version == ["Start", "Both", "One", "Done"]
    assert flow.steps[1].substeps.names == ["One", "Two"]


def test_conditional_applies_to_a_whole_group_and_keeps_its_sub_steps():
    group = conditional(lambda state: False)(step_group("Both", one >> two))

    assert group.kind == StepKind.GROUP and group.condition is not None
    assert group.substeps.names == ["One", "Two"]


def test_callback_steps_and_timers_are_allowed_in_a_group():
    ask = callback_step("Ask the system", action=lambda: None)

    group = step_group("Ask and wait", one >> ask >> sleep(timedelta(minutes=1)))

    assert [s.kind for s in group.substeps] == [StepKind.STEP, StepKind.CALLBACK, StepKind.TIMER]


def test_an_empty_group_is_refused():
    with pytest.raises(TypeError) as refused:
        step_group("Nothing", begin)
    assert str(refused.value) == "step group 'Nothing' has no steps: give it at least one (begin >> a >> b)"


def test_a_group_inside_a_group_is_refused():
    inner = step_group("Inner", one)

    with pytest.raises(TypeError) as refused:
        step_group("Outer", two >> inner)
    assert str(refused.value) == ("step group 'Outer' holds the step group 'Inner': groups cannot be nested; put its "
                                  "steps in 'Outer' directly")


@pytest.mark.parametrize("ending", [done, abort, conditional(lambda state: True)(abort)])
def test_done_or_abort_inside_a_group_is_refused(ending):
    with pytest.raises(TypeError) as refused:
        step_group("Ends", one >> ending)
    assert str(refused.value) == (f"step group 'Ends' holds {ending.name!r} ({ending.kind}): a group cannot end the "
                                  f"process; put {ending.kind} after the group")


def test_two_sub_steps_of_one_name_are_refused():
    with pytest.raises(TypeError) as refused:
        step_group("Twice", one >> two >> one)
    assert str(refused.value) == ("step group 'Twice' has more than one step named 'One': sub-step names identify "
                                  "where the group stopped, so they must be unique in it")


@pytest.mark.parametrize("name", ["", "   ", None])
def test_a_group_without_a_name_is_refused(name):
    with pytest.raises(TypeError) as refused:
        step_group(name, one)
    assert "a step group needs a name" in str(refused.value)


def test_a_group_of_something_that_is_not_steps_is_refused_naming_it():
    with pytest.raises(TypeError) as refused:
        step_group("Plain", [one, two])
    assert str(refused.value).startswith("step group 'Plain': cannot chain [<step 'One'>, <step 'Two'>] (a list)")


def test_a_group_named_like_another_step_of_its_workflow_is_refused_like_any_duplicate(declared):
    with pytest.raises(TypeError) as refused:

        @workflow("DSL test: duplicate", name=f"{PREFIX}duplicate")
        def flow():
            return begin >> one >> step_group("One", two)

    assert "has more than one step named 'One'" in str(refused.value)
