"""The workflow DSL: `>>` chaining, refusals at declaration time, and the standard steps of each wrapper."""

from __future__ import annotations

import pytest
from django import forms as django_forms
from rest_framework import serializers

from workflows.dsl import (
    Step,
    StepKind,
    StepList,
    abort,
    begin,
    conditional,
    done,
    init,
    inputstep,
    retrystep,
    step,
)
from workflows.registry import (
    all_workflows,
    create_workflow,
    modify_workflow,
    reconcile_workflow,
    task,
    terminate_workflow,
    unregister,
    validate_workflow,
    workflow,
)

PREFIX = "t_dsl_"


@pytest.fixture
def declared():
    """Names of workflows a test declares; each is unregistered afterwards, so no test leaks into another."""
    names: list[str] = []
    yield names
    for name in names:
        unregister(name)
    leaked = [name for name in all_workflows() if name.startswith(PREFIX)]
    for name in leaked:
        unregister(name)
    assert not leaked, f"a test declared workflows without listing them: {leaked}"


@step("Alpha")
def alpha() -> None:
    return None


@step("Beta")
def beta(alpha_done: bool = False) -> dict:
    return {"beta_done": True}


@step("Gamma")
def gamma(state: dict) -> None:
    return None


def plain_function() -> None:
    """Not decorated: chaining it must be refused."""


class GoodForm(serializers.Serializer):
    name = serializers.CharField()


# --- chaining --------------------------------------------------------------------------------------
def test_begin_chain_keeps_the_order_and_leaves_begin_empty():
    chain = begin >> alpha >> beta >> gamma

    assert isinstance(chain, StepList)
    assert chain.names == ["Alpha", "Beta", "Gamma"]
    assert list(chain) == [alpha, beta, gamma]
    # `begin` is shared by every workflow: chaining must never change it.
    assert len(begin) == 0
    assert (begin >> gamma).names == ["Gamma"]


def test_two_steps_chained_give_a_step_list():
    chain = alpha >> beta

    assert isinstance(chain, StepList)
    assert chain.names == ["Alpha", "Beta"]


def test_step_lists_chain_with_steps_and_with_each_other():
    first = alpha >> beta
    assert (first >> (gamma >> done)).names == ["Alpha", "Beta", "Gamma", "Done"]
    assert (begin >> first >> gamma).names == ["Alpha", "Beta", "Gamma"]


def test_chaining_an_int_is_refused_naming_it_and_the_previous_step():
    with pytest.raises(TypeError) as excinfo:
        begin >> alpha >> beta >> 42

    message = str(excinfo.value)
    assert "42" in message
    assert "int" in message
    assert "'Beta'" in message  # the step after which it went wrong


def test_chaining_a_plain_function_is_refused_suggesting_the_step_decorator():
    with pytest.raises(TypeError) as excinfo:
        begin >> alpha >> plain_function

    message = str(excinfo.value)
    assert "plain_function" in message
    assert "'Alpha'" in message
    assert "@step" in message


def test_chaining_a_plain_function_directly_after_a_step_is_refused_too():
    with pytest.raises(TypeError, match=r"plain_function.*@step"):
        alpha >> plain_function
    with pytest.raises(TypeError, match="plain_function"):
        plain_function >> alpha


def test_chaining_a_string_is_refused_without_suggesting_a_decorator():
    with pytest.raises(TypeError) as excinfo:
        begin >> alpha >> "Beta"

    message = str(excinfo.value)
    assert "'Beta'" in message
    assert "str" in message
    assert "'Alpha'" in message
    assert "@step" not in message  # a string is not a function to decorate


def test_a_workflow_chaining_a_non_step_fails_when_it_is_declared(declared):
    declared.append(f"{PREFIX}bad_chain")

    with pytest.raises(TypeError) as excinfo:

        @workflow("DSL test: chains a plain function", name=f"{PREFIX}bad_chain")
        def bad_chain() -> StepList:
            return begin >> alpha >> plain_function

    message = str(excinfo.value)
    assert f"{PREFIX}bad_chain" in message
    assert "plain_function" in message
    assert "@step" in message
    assert f"{PREFIX}bad_chain" not in all_workflows()


def test_a_workflow_returning_something_that_is_not_steps_is_refused(declared):
    declared.append(f"{PREFIX}returns_none")

    with pytest.raises(TypeError, match=f"{PREFIX}returns_none.*None"):

        @workflow("DSL test: returns nothing", name=f"{PREFIX}returns_none")
        def returns_none() -> StepList:
            return None  # type: ignore[return-value]

    assert f"{PREFIX}returns_none" not in all_workflows()


# --- step declarations -----------------------------------------------------------------------------
def test_step_keeps_the_function_callable_for_unit_tests():
    assert beta() == {"beta_done": True}
    assert [p.name for p in beta.params] == ["alpha_done"]
    assert beta.params[0].has_default


def test_a_step_taking_star_args_is_refused():
    with pytest.raises(TypeError, match=r"takes \*args"):

        @step("Star args")
        def star_args(*args: object) -> None:
            return None


def test_a_step_taking_star_star_kwargs_is_refused():
    with pytest.raises(TypeError, match=r"takes \*extra"):

        @step("Star kwargs")
        def star_kwargs(node_name: str, **extra: object) -> None:
            return None


def test_a_step_without_a_name_is_refused():
    with pytest.raises(TypeError, match="needs a name"):
        step(alpha.func)  # type: ignore[arg-type]  # @step used without ("...")
    with pytest.raises(TypeError, match="needs a name"):
        step("   ")


def test_retrystep_and_inputstep_make_steps_of_their_kind():
    @retrystep("Call flaky API")
    def flaky() -> None:
        return None

    @inputstep("Ask for a name", form=GoodForm)
    def ask() -> None:
        return None

    assert flaky.kind == StepKind.RETRY
    assert ask.kind == StepKind.INPUT
    assert ask.form is GoodForm


@pytest.mark.parametrize(
    "form",
    [dict, GoodForm(), django_forms.Form, "GoodForm", serializers.CharField],
    ids=["dict", "serializer-instance", "django-form", "string", "field-class"],
)
def test_inputstep_with_a_form_that_is_not_a_serializer_class_is_refused(form):
    with pytest.raises(TypeError, match=r"Ask for input.*Serializer class"):
        inputstep("Ask for input", form=form)


def test_a_workflow_with_an_initial_form_that_is_not_a_serializer_is_refused():
    with pytest.raises(TypeError, match="Serializer class"):
        workflow("DSL test: bad form", initial_input_form=dict)


def test_conditional_wraps_a_step_with_its_predicate_and_keeps_the_original():
    def predicate(state: dict) -> bool:
        return bool(state.get("go"))

    guarded = conditional(predicate)(beta)

    assert isinstance(guarded, Step)
    assert guarded.name == "Beta"
    assert guarded.func is beta.func
    assert guarded.params == beta.params
    assert guarded.condition is predicate
    assert beta.condition is None  # the original step is unchanged


@pytest.mark.parametrize("target", [plain_function, "Beta", 3, alpha >> beta], ids=["function", "str", "int", "list"])
def test_conditional_applies_to_steps_only(target):
    with pytest.raises(TypeError, match="conditional"):
        conditional(lambda state: True)(target)


# --- workflows: standard steps and refusals --------------------------------------------------------
def test_a_plain_workflow_gets_start_and_done(declared):
    declared.append(f"{PREFIX}plain")

    @workflow("DSL test: plain", name=f"{PREFIX}plain")
    def plain() -> StepList:
        return begin >> alpha >> beta

    assert plain.steps.names == ["Start", "Alpha", "Beta", "Done"]
    assert plain.steps[0] is init
    assert plain.steps[-1] is done
    assert plain.body.names == ["Alpha", "Beta"]
    assert plain.version == ["Start", "Alpha", "Beta", "Done"]
    assert all_workflows()[f"{PREFIX}plain"] is plain


def test_a_plain_workflow_that_starts_and_ends_itself_is_not_doubled(declared):
    declared.extend([f"{PREFIX}explicit", f"{PREFIX}aborting"])

    @workflow("DSL test: explicit start and done", name=f"{PREFIX}explicit")
    def explicit() -> StepList:
        return init >> alpha >> done

    @workflow("DSL test: ends in abort", name=f"{PREFIX}aborting")
    def aborting() -> StepList:
        return begin >> alpha >> abort

    assert explicit.steps.names == ["Start", "Alpha", "Done"]
    assert aborting.steps.names == ["Start", "Alpha", "Abort"]


def test_create_workflow_adds_the_standard_steps_in_order(declared):
    declared.append(f"{PREFIX}create")

    @create_workflow("DSL test: create", name=f"{PREFIX}create", product_types=["Node"])
    def create() -> StepList:
        return begin >> alpha >> beta

    assert create.steps.names == [
        "Start", "Create subscription", "Link subscription to process", "Alpha", "Beta",
        "Set subscription active", "Resync", "Done",
    ]
    assert create.target == "create"
    assert not create.needs_subscription
    # A create workflow always asks for the product and the customer, even without a form of its own.
    fields = create.initial_input_form().fields
    assert {"product", "customer_id", "description"} <= set(fields)


def test_modify_workflow_adds_the_standard_steps_in_order(declared):
    declared.append(f"{PREFIX}modify")

    @modify_workflow("DSL test: modify", name=f"{PREFIX}modify")
    def modify() -> StepList:
        return begin >> alpha >> beta

    assert modify.steps.names == ["Start", "Link subscription to process", "Unsync", "Alpha", "Beta", "Resync", "Done"]
    assert modify.needs_subscription
    assert modify.allowed_statuses == ("active",)


def test_terminate_workflow_adds_the_standard_steps_in_order(declared):
    declared.append(f"{PREFIX}terminate")

    @terminate_workflow("DSL test: terminate", name=f"{PREFIX}terminate")
    def terminate() -> StepList:
        return begin >> alpha

    assert terminate.steps.names == [
        "Start", "Link subscription to process", "Unsync", "Alpha", "Set subscription terminated", "Resync", "Done",
    ]
    assert terminate.needs_subscription


def test_validate_workflow_reads_without_taking_the_subscription(declared):
    declared.append(f"{PREFIX}validate")

    @validate_workflow("DSL test: validate", name=f"{PREFIX}validate")
    def validate() -> StepList:
        return begin >> gamma

    # No unsync and no resync: a validation never takes the subscription, so it may run while it is held.
    assert validate.steps.names == ["Start", "Link subscription to process", "Gamma", "Done"]
    assert validate.target == "validate"
    assert validate.usable_while_out_of_sync


def test_reconcile_workflow_adds_its_standard_steps_in_order(declared):
    declared.append(f"{PREFIX}reconcile")

    @reconcile_workflow("DSL test: reconcile", name=f"{PREFIX}reconcile")
    def reconcile() -> StepList:
        return begin >> gamma

    assert reconcile.steps.names == [
        "Start", "Link subscription to process", "Unsync for reconcile", "Gamma", "Resync", "Done",
    ]
    assert reconcile.target == "modify"
    assert reconcile.reconciles and not reconcile.usable_while_out_of_sync


def test_run_predicate_must_be_callable(declared):
    with pytest.raises(TypeError, match="run_predicate must be callables"):
        @task("DSL test: bad predicate", name=f"{PREFIX}bad_predicate", run_predicate=["not callable"])
        def bad() -> StepList:
            return begin >> gamma


def test_task_adds_only_start_and_done(declared):
    declared.append(f"{PREFIX}task")

    @task("DSL test: task", name=f"{PREFIX}task")
    def a_task() -> StepList:
        return begin >> alpha >> gamma

    assert a_task.steps.names == ["Start", "Alpha", "Gamma", "Done"]
    assert a_task.is_task
    assert a_task.target == "system"


def test_a_workflow_name_defaults_to_the_function_name(declared):
    declared.append(f"{PREFIX}by_function_name")

    @workflow("DSL test: named by its function")
    def t_dsl_by_function_name() -> StepList:
        return begin >> alpha

    assert t_dsl_by_function_name.name == f"{PREFIX}by_function_name"


def test_duplicate_step_names_in_a_workflow_are_refused(declared):
    declared.append(f"{PREFIX}duplicates")

    @step("Alpha")
    def another_alpha() -> None:
        return None

    with pytest.raises(TypeError, match=f"{PREFIX}duplicates.*more than one step named 'Alpha'"):

        @workflow("DSL test: duplicates", name=f"{PREFIX}duplicates")
        def duplicates() -> StepList:
            return begin >> alpha >> beta >> another_alpha

    assert f"{PREFIX}duplicates" not in all_workflows()


def test_a_body_step_named_like_a_standard_step_is_refused(declared):
    declared.append(f"{PREFIX}clash")

    @step("Resync")
    def my_resync() -> None:
        return None

    with pytest.raises(TypeError, match="more than one step named 'Resync'"):

        @modify_workflow("DSL test: clashes with the wrapper", name=f"{PREFIX}clash")
        def clash() -> StepList:
            return begin >> my_resync

    assert f"{PREFIX}clash" not in all_workflows()


def test_the_same_step_twice_in_a_workflow_is_refused(declared):
    declared.append(f"{PREFIX}twice")

    with pytest.raises(TypeError, match="more than one step named 'Alpha'"):

        @workflow("DSL test: twice", name=f"{PREFIX}twice")
        def twice() -> StepList:
            return begin >> alpha >> alpha


def test_an_unknown_target_or_lifecycle_status_is_refused():
    with pytest.raises(TypeError, match="target must be one of"):
        workflow("DSL test: bad target", target="destroy")
    with pytest.raises(TypeError, match=r"unknown lifecycle status.*deleted"):
        modify_workflow("DSL test: bad status", allowed_statuses=["active", "deleted"])


def test_one_name_declared_in_two_modules_is_refused(declared):
    name = f"{PREFIX}twice_declared"
    declared.append(name)

    @workflow("DSL test: first declaration", name=name)
    def first() -> StepList:
        return begin >> alpha

    def second() -> StepList:
        return begin >> beta

    second.__module__ = "somewhere.else.workflows"
    with pytest.raises(TypeError, match=f"{name}.*declared twice"):
        workflow("DSL test: second declaration", name=name)(second)

    assert all_workflows()[name] is first


# --- done and abort: only at the end, unless conditional --------------------------------------------
def test_registration_refuses_an_unconditional_abort_before_the_end(declared):
    declared.append(f"{PREFIX}abort_early")

    with pytest.raises(TypeError) as excinfo:

        @workflow("DSL test: aborts before the end", name=f"{PREFIX}abort_early")
        def abort_early() -> StepList:
            return begin >> alpha >> abort >> beta >> gamma

    message = str(excinfo.value)
    assert f"workflow {PREFIX}abort_early" in message
    assert "step 3 ('Abort') aborts the process unconditionally" in message
    assert "could never run: 'Beta', 'Gamma', 'Done'" in message
    assert "conditional(predicate)(abort)" in message
    assert f"{PREFIX}abort_early" not in all_workflows()


def test_registration_refuses_an_unconditional_done_before_the_end(declared):
    declared.append(f"{PREFIX}done_early")

    with pytest.raises(TypeError) as excinfo:

        @workflow("DSL test: done before the end", name=f"{PREFIX}done_early")
        def done_early() -> StepList:
            return begin >> alpha >> done >> beta >> abort

    message = str(excinfo.value)
    assert f"workflow {PREFIX}done_early" in message
    assert "step 3 ('Done') completes the process unconditionally" in message
    assert "could never run: 'Beta', 'Abort'" in message
    assert f"{PREFIX}done_early" not in all_workflows()


@pytest.mark.parametrize("ending", [abort, done], ids=["abort", "done"])
def test_registration_refuses_a_wrapped_body_that_ends_the_process_before_the_standard_steps(declared, ending):
    declared.append(f"{PREFIX}wrapped_ending")

    with pytest.raises(TypeError) as excinfo:

        @modify_workflow("DSL test: body ends the process", name=f"{PREFIX}wrapped_ending")
        def wrapped_ending() -> StepList:
            return begin >> alpha >> ending

    message = str(excinfo.value)
    assert f"step 5 ({ending.name!r})" in message
    assert "could never run: 'Resync', 'Done'" in message
    assert "standard steps of a modify workflow come after its body" in message
    assert f"{PREFIX}wrapped_ending" not in all_workflows()


def test_registration_refuses_an_abort_at_the_end_of_a_task_body(declared):
    # A task's wrapper appends done itself: an abort ending the body would come before it.
    declared.append(f"{PREFIX}task_abort")

    with pytest.raises(TypeError, match=r"step 3 \('Abort'\).*could never run: 'Done'"):

        @task("DSL test: task ends in abort", name=f"{PREFIX}task_abort")
        def task_abort() -> StepList:
            return begin >> alpha >> abort


def test_a_conditional_abort_in_the_middle_is_allowed(declared):
    declared.extend([f"{PREFIX}maybe_abort", f"{PREFIX}maybe_abort_modify"])

    @workflow("DSL test: aborts only when told", name=f"{PREFIX}maybe_abort")
    def maybe_abort() -> StepList:
        return begin >> alpha >> conditional(lambda state: state.get("stop", False))(abort) >> beta

    @modify_workflow("DSL test: modify that may abort", name=f"{PREFIX}maybe_abort_modify")
    def maybe_abort_modify() -> StepList:
        return begin >> alpha >> conditional(lambda state: False)(abort) >> beta

    assert maybe_abort.steps.names == ["Start", "Alpha", "Abort", "Beta", "Done"]
    assert maybe_abort.steps[2].condition is not None
    assert maybe_abort_modify.steps.names == [
        "Start", "Link subscription to process", "Unsync", "Alpha", "Abort", "Beta", "Resync", "Done",
    ]


def test_a_conditional_abort_at_the_end_is_followed_by_done(declared):
    # Skipped, it must not leave the process past its last step: done completes it.
    declared.append(f"{PREFIX}abort_last_maybe")

    @workflow("DSL test: may abort at the end", name=f"{PREFIX}abort_last_maybe")
    def abort_last_maybe() -> StepList:
        return begin >> alpha >> conditional(lambda state: False)(abort)

    assert abort_last_maybe.steps.names == ["Start", "Alpha", "Abort", "Done"]
    assert abort_last_maybe.steps[-1] is done


def test_a_conditional_done_at_the_end_is_refused(declared):
    declared.append(f"{PREFIX}done_last_maybe")

    with pytest.raises(TypeError, match=r"step 3 \('Done'\), is a conditional done.*drop the condition"):

        @workflow("DSL test: may complete at the end", name=f"{PREFIX}done_last_maybe")
        def done_last_maybe() -> StepList:
            return begin >> alpha >> conditional(lambda state: False)(done)

    assert f"{PREFIX}done_last_maybe" not in all_workflows()


class StopForm(serializers.Serializer):
    stop = serializers.BooleanField()


@step("Record the run")
def record_run(process_id: str) -> dict:
    return {"ran_after_the_abort": True}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stop", [False, True], ids=["condition-false", "condition-true"])
def test_the_engine_runs_past_a_conditional_abort_when_false_and_aborts_when_true(declared, stop):
    from processes.models import ProcessStep
    from processes.services import start_process

    name = f"{PREFIX}engine_maybe_abort"
    declared.append(name)

    @workflow("DSL test: the engine and a conditional abort", name=name, initial_input_form=StopForm)
    def engine_maybe_abort() -> StepList:
        return begin >> alpha >> conditional(lambda state: state["stop"])(abort) >> record_run

    process = start_process(name, user_input={"stop": stop}, by="tester")

    rows = list(ProcessStep.objects.filter(process=process).order_by("id").values_list("name", "status"))
    if stop:
        assert process.status == "aborted"
        assert process.failed_reason == "the workflow aborted at step 'Abort'"
        assert rows == [("Start", "success"), ("Alpha", "success"), ("Abort", "abort")]
    else:
        assert process.status == "completed"
        assert rows == [
            ("Start", "success"), ("Alpha", "success"), ("Abort", "skipped"), ("Record the run", "success"),
            ("Done", "complete"),
        ]
        assert ProcessStep.objects.filter(process=process).order_by("id").last().state_after()["ran_after_the_abort"]
