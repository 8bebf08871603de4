"""Workflows with step groups (tests/processes/test_step_groups.py): each sub-step writes one counted effect."""

from __future__ import annotations

from datetime import timedelta

from subscriptions.models import ResourceType
from tests.processes.flows import choose_colour, effect, needs_key, write_a, write_c, write_then_hang
from tests.processes.wait_flows import deploy_config
from workflows.dsl import REMOVE, Repeat, State, StepList, again, begin, conditional, retrystep, sleep, step, step_group
from workflows.registry import workflow

# What the sub-steps do, set by the tests: how many more times to fail (reset by the tests' fixture).
GROUP_CONTROL: dict[str, int] = {"g2_fail_times": 0, "flaky_fail_times": 0, "pause_in_g1": 0, "wanted": 0}


def run_effect(what: str, process_id: str) -> None:
    """One counted effect per committed run ("g1-<process>-0", "-1", ...): a sub-step of a group runs again
    when the group is retried, so each run writes a row of its own."""
    prefix = f"{what}-{process_id}"
    effect(f"{prefix}-{ResourceType.objects.filter(resource_type__startswith=prefix).count()}")


@step("Write G1")
def write_g1(process_id: str) -> State:
    run_effect("g1", process_id)
    if GROUP_CONTROL["pause_in_g1"]:
        # As if staff paused the engine while this sub-step ran: the pause commits with it, and the run stops
        # at the boundary after it, between two sub-steps.
        from processes.models import EngineSettings

        GROUP_CONTROL["pause_in_g1"] = 0
        EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})
    return {"g1": 1}


@step("Write G2 then maybe fail")
def write_g2(process_id: str, g1: int) -> State:
    run_effect("g2", process_id)  # rolled back with a failure
    if GROUP_CONTROL["g2_fail_times"] > 0:
        GROUP_CONTROL["g2_fail_times"] -= 1
        raise RuntimeError("the switch refused the VLAN")
    return {"g2": g1 + 1, "scratch": "kept until G3"}


@step("Write G3")
def write_g3(process_id: str, g2: int = 0) -> State:
    run_effect("g3", process_id)
    return {"g3": g2 + 1, "scratch": REMOVE}


configure = step_group("Configure the switch", begin >> write_g1 >> write_g2 >> write_g3)


@workflow("Group test: three sub-steps between two steps")
def t_group() -> StepList:
    return begin >> write_a >> configure >> write_c


@step("Decide whether to configure")
def decide() -> State:
    return {"wanted": bool(GROUP_CONTROL["wanted"])}


@workflow("Group test: a group that runs only when wanted")
def t_group_conditional() -> StepList:
    return begin >> decide >> conditional(lambda state: state["wanted"])(configure) >> write_c


@retrystep("Call a flaky controller")
def flaky_controller(process_id: str) -> State:
    run_effect("flaky", process_id)  # rolled back with a failure
    if GROUP_CONTROL["flaky_fail_times"] > 0:
        GROUP_CONTROL["flaky_fail_times"] -= 1
        raise ConnectionError("controller unreachable")
    return {"flaky_ok": True}


@workflow("Group test: a retry step inside a group")
def t_group_retry() -> StepList:
    return begin >> step_group("Provision the port", begin >> write_g1 >> flaky_controller >> write_g3)


@workflow("Group test: a sub-step a test can kill a worker in")
def t_group_killable() -> StepList:
    return begin >> step_group("Hang in the group", begin >> write_g1 >> write_then_hang >> write_g3) >> write_c


@step("Use the colour")
def use_colour(colour: str, g1: int) -> State:
    return {"painted": f"{colour} after g{g1}"}


@workflow("Group test: an input step inside a group")
def t_group_input() -> StepList:
    return begin >> step_group("Paint", begin >> write_g1 >> choose_colour >> use_colour) >> needs_key


@workflow("Group test: an input step last in a group")
def t_group_input_last() -> StepList:
    return begin >> step_group("Ask last", begin >> write_g1 >> choose_colour) >> needs_key


@workflow("Group test: a callback step inside a group")
def t_group_callback() -> StepList:
    return begin >> step_group("Deploy in a group", begin >> write_g1 >> deploy_config >> write_g3) >> write_c


@workflow("Group test: a timer inside a group")
def t_group_timer() -> StepList:
    return begin >> step_group("Wait in a group", begin >> write_g1 >> sleep(timedelta(minutes=5)) >> write_g3)


@workflow("Group test: a timer last in a group")
def t_group_timer_last() -> StepList:
    return begin >> step_group("Wait last", begin >> write_g1 >> sleep(timedelta(minutes=5))) >> write_c


@step("Count again")
def count_again(counted: int = 0) -> State | Repeat:
    return again({"counted": counted + 1}) if counted < 3 else {"counted": counted}


@workflow("Group test: a sub-step that asks to run again")
def t_group_again() -> StepList:
    return begin >> step_group("Count in a group", begin >> write_g1 >> count_again)
