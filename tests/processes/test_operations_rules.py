"""What the user gave and what the user may do is respected: resume input deep-merged, the authorize hook on
every action and in the allowed-workflows list, a retried process's row cleared of its old failure, and a
process of a removed workflow answered with 409 (abort still works)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from rest_framework import serializers

from processes.engine import current_state
from processes.models import Process, ProcessStep
from processes.services import skip_step, start_process
from tests.processes import flows
from tests.processes.test_api_processes import client_for, detail, with_run_permission
from workflows.dsl import State, begin, inputstep, step
from workflows.registry import get_workflow, register, unregister, workflow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runner(db):
    """A user allowed to run processes, whom no workflow's hook singles out."""
    return with_run_permission(username="runner")


# --- item 11: resume input is deep-merged into the state -------------------------------------------
class SubForm(serializers.Serializer):
    sub = serializers.DictField()
    tags = serializers.ListField(child=serializers.CharField(), required=False)


@inputstep("Adjust the settings", form=SubForm)
def adjust() -> State:
    return {}


@step("Seed the settings")
def seed() -> State:
    return {"sub": {"a": 1, "b": 2, "deep": {"x": 1, "y": 2}}, "tags": ["old", "older"]}


@pytest.fixture
def t_merge():
    spec = workflow("Rules test: input merged into nested state", name="t_merge")(
        lambda: begin >> seed >> adjust)
    yield spec
    unregister(spec.name)


def test_resume_input_is_deep_merged_and_lists_are_replaced(t_merge, runner):
    process = start_process("t_merge")
    assert process.status == "suspended"

    response = client_for(runner).post(f"{detail(process.process_id)}resume/",
                                       {"input": {"sub": {"a": 5, "deep": {"y": 9}}, "tags": ["new"]}},
                                       format="json")

    assert response.status_code == 200, response.content
    state = current_state(process)
    assert state["sub"] == {"a": 5, "b": 2, "deep": {"x": 1, "y": 9}}  # b and deep.x are not lost
    assert state["tags"] == ["new"]  # a list is replaced, not merged


# --- item 12: the authorize hook applies to every action, and to what is offered ----------------------
class ColourForm(serializers.Serializer):
    colour = serializers.ChoiceField(choices=["red", "green"])


@inputstep("Pick a colour", form=ColourForm)
def pick() -> State:
    return {}


@pytest.fixture
def only_alice_suspends():
    spec = workflow(
        "Rules test: only alice may act on it", name="t_only_alice_input",
        authorize=lambda user, spec, subscription: user.username == "alice",
    )(lambda: begin >> pick >> flows.write_a >> flows.write_b_then_fail >> flows.write_c)
    yield spec
    unregister(spec.name)


def test_a_user_the_hook_refuses_can_neither_resume_nor_abort_nor_skip_someone_elses_process(
    only_alice_suspends, runner
):
    alice = with_run_permission(username="alice")
    pid = client_for(alice).post("/api/processes/", {"workflow": "t_only_alice_input"}, format="json").json()["id"]
    assert Process.objects.get(pk=pid).status == "suspended"

    other = client_for(runner)
    resumed = other.post(f"{detail(pid)}resume/", {"input": {"colour": "red"}}, format="json")
    aborted = other.post(f"{detail(pid)}abort/", {"reason": "mine now"}, format="json")
    assert (resumed.status_code, resumed.json()) == (403, {"detail": "you may not resume t_only_alice_input"})
    assert (aborted.status_code, aborted.json()) == (403, {"detail": "you may not abort t_only_alice_input"})
    assert Process.objects.get(pk=pid).status == "suspended"  # nothing changed

    flows.CONTROL["fail_times"] = 1
    assert client_for(alice).post(f"{detail(pid)}resume/", {"input": {"colour": "red"}},
                                  format="json").json()["status"] == "failed"
    with pytest.raises(PermissionDenied, match="you may not skip a step of t_only_alice_input"):
        skip_step(pid, by=runner, reason="I say so")
    assert Process.objects.get(pk=pid).status == "failed"
    assert skip_step(pid, by=alice, reason="safe to skip").status == "completed"


def test_the_workflows_allowed_on_a_subscription_give_the_hooks_refusal_as_a_reason(active_node, runner):
    from workflows.registry import modify_workflow

    spec = modify_workflow("Rules test: only alice may modify", name="t_only_alice_modify", product_types=["Node"],
                           authorize=lambda user, spec, subscription: user.username == "alice")(
        lambda: begin >> flows.rename_node)
    try:
        alice = with_run_permission(username="alice")
        url = f"/api/subscriptions/{active_node.pk}/workflows/"
        for_runner = {w["name"]: w for w in client_for(runner).get(url).json()}
        for_alice = {w["name"]: w for w in client_for(alice).get(url).json()}
    finally:
        unregister(spec.name)

    assert for_runner["t_only_alice_modify"]["allowed"] is False
    assert for_runner["t_only_alice_modify"]["reasons"] == ["you may not start t_only_alice_modify"]
    assert for_alice["t_only_alice_modify"]["allowed"] is True
    assert for_runner["modify_node"]["allowed"] is True  # others unaffected


# --- item 13: a retried process no longer shows its old failure ----------------------------------------
def test_once_retried_a_process_row_no_longer_shows_the_old_failure_but_the_log_keeps_it(settings, runner):
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes")
    assert process.failed_reason and process.traceback
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}  # retried, not yet run

    retried = client_for(runner).post(f"{detail(process.process_id)}retry/", format="json")

    assert retried.json()["status"] == "running"
    process = Process.objects.get(pk=process.pk)
    assert (process.failed_reason, process.traceback) == ("", "")
    shown = client_for(runner).get(detail(process.process_id)).json()
    assert shown["failed_reason"] == ""
    failed_row = ProcessStep.objects.get(process=process, status="failed")
    assert "the external system said no" in failed_row.error and failed_row.traceback


# --- item 14: a process of a workflow removed from code ------------------------------------------------
@step("Explode")
def explode() -> State:
    raise RuntimeError("boom")


def test_a_process_whose_workflow_was_removed_answers_resume_and_retry_with_409_and_can_be_aborted(runner):
    spec = workflow("Rules test: leaves the code", name="t_removed")(lambda: begin >> explode)
    failed = start_process("t_removed")
    suspended = start_process("t_input")
    unregister("t_removed")
    input_spec = get_workflow("t_input")
    unregister("t_input")
    try:
        api = client_for(runner)
        retried = api.post(f"{detail(failed.process_id)}retry/", format="json")
        resumed = api.post(f"{detail(suspended.process_id)}resume/", {"input": {"colour": "red"}}, format="json")
        shown = api.get(detail(suspended.process_id))
        aborted = api.post(f"{detail(failed.process_id)}abort/", {"reason": "gone from the code"}, format="json")
    finally:
        register(input_spec)

    assert retried.status_code == 409
    assert retried.json()["detail"] == (f"cannot retry process {failed.process_id}: workflow t_removed was removed "
                                        f"from code (or its module no longer imports); abort the process")
    assert resumed.status_code == 409 and "workflow t_input was removed from code" in resumed.json()["detail"]
    assert shown.status_code == 200  # it can still be looked at
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    assert spec.name == "t_removed"
