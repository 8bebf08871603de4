"""Workflows the composition tests run: a parent that fans out to one child per item, children that may fail or
wait, modify children that each hold a node, and parallel branches."""

from __future__ import annotations

import os
import threading
import time
import uuid

from rest_framework import serializers

from subscriptions.models import ResourceType
from workflows.compose import parallel, subprocesses
from workflows.dsl import State, StepList, begin, inputstep, step
from workflows.node.products import NodeProduct, PortProduct
from workflows.registry import modify_workflow, task, workflow

# Set by the tests: items whose child fails (their "Work on the item" step raises while the item is listed),
# and a barrier the children's work steps meet at, so that their final transactions race (the join test).
FAILING: set[int] = set()
MEET: dict[str, threading.Barrier | None] = {"barrier": None, "items": None}
# Set by a test: the slow parent's items function says it is inside, then waits to be released.
HOLD = {"inside": threading.Event(), "release": threading.Event()}


def effect(name: str) -> None:
    """A database write the tests count: one ResourceType row per effect, named `<name>#<random>` so that a
    second run of the same work adds a second row (counted by `effects(name)`) instead of failing."""
    ResourceType.objects.create(resource_type=f"{name}#{uuid.uuid4().hex[:12]}", description="composition test")


def effects(name: str) -> int:
    return ResourceType.objects.filter(resource_type__startswith=f"{name}#").count()


class ItemForm(serializers.Serializer):
    item = serializers.IntegerField(min_value=0)
    parent_tag = serializers.CharField(max_length=30)  # shorter than the parent's: a test's item is refused


class CountForm(serializers.Serializer):
    count = serializers.IntegerField(min_value=0, max_value=1000)
    tag = serializers.CharField(max_length=60)


@step("Work on the item")
def work_on_item(item: int, parent_tag: str) -> State:
    if item in FAILING:
        raise RuntimeError(f"the device for item {item} did not answer")
    barrier = MEET["barrier"]
    if barrier is not None:
        barrier.wait(timeout=20)
    pause = float(os.environ.get("COMPOSE_TEST_CHILD_SECONDS", "0"))
    if pause:
        time.sleep(pause)
    effect(f"child-{parent_tag}-{item}")
    return {"doubled": item * 2}


@workflow("Composition test: one child item", initial_input_form=ItemForm)
def t_child_item() -> StepList:
    return begin >> work_on_item


def one_per_item(count: int, tag: str) -> list[dict]:
    return [{"item": i, "parent_tag": tag} for i in range(count)]


@step("Add up the children's results")
def add_up(items: list, tag: str) -> State:
    effect(f"parent-{tag}")
    # A child whose work step was skipped has no "doubled": it adds nothing.
    return {"total": sum(result.get("doubled", 0) for result in items)}


@workflow("Composition test: one child per item, then add up", initial_input_form=CountForm)
def t_fan_out() -> StepList:
    return begin >> subprocesses("t_child_item", one_per_item, name="Work on every item", result_key="items") \
        >> add_up


def held_items(count: int, tag: str) -> list[dict]:
    HOLD["inside"].set()
    if not HOLD["release"].wait(timeout=60):
        raise RuntimeError("the test never released the step")
    return one_per_item(count, tag)


@workflow("Composition test: a parent whose children step is held open", initial_input_form=CountForm)
def t_fan_out_held() -> StepList:
    return begin >> subprocesses("t_child_confirm", held_items, name="Confirm every item", result_key="items") \
        >> add_up


# --- children that each hold a node of their own --------------------------------------------------------
class NodesForm(serializers.Serializer):
    node_ids = serializers.ListField(child=serializers.UUIDField(), max_length=100)


class ConfirmForm(serializers.Serializer):
    confirm = serializers.BooleanField()


@step("Rename the node for the parent")
def rename_for_parent(subscription: NodeProduct, new_name: str) -> State:
    subscription.node.node_name = new_name
    return {"subscription": subscription, "renamed_to": new_name}


class RenameForm(serializers.Serializer):
    new_name = serializers.CharField(max_length=60)


@modify_workflow("Composition test: rename one node", product_types=["Node"], initial_input_form=RenameForm)
def t_child_rename() -> StepList:
    return begin >> rename_for_parent


def one_per_node(node_ids: list) -> list[dict]:
    return [{"subscription_id": str(node_id), "new_name": f"renamed-{i}"} for i, node_id in enumerate(node_ids)]


@workflow("Composition test: rename every node, each in a child", initial_input_form=NodesForm)
def t_rename_nodes() -> StepList:
    return begin >> subprocesses("t_child_rename", one_per_node, result_key="renames",
                                 result=lambda state: state["renamed_to"])


def one_per_node_after_meeting(node_ids: list) -> list[dict]:
    barrier = MEET["items"]
    if barrier is not None:
        barrier.wait(timeout=20)  # both parents are inside their children steps: their locks race
    return one_per_node(node_ids)


@workflow("Composition test: rename every node, after meeting another parent", initial_input_form=NodesForm)
def t_rename_nodes_met() -> StepList:
    return begin >> subprocesses("t_child_rename", one_per_node_after_meeting, result_key="renames",
                                 result=lambda state: state["renamed_to"])


# --- a node's change that fans out to its ports, holding the node meanwhile ------------------------------
class PortIdsForm(serializers.Serializer):
    port_ids = serializers.ListField(child=serializers.UUIDField(), max_length=100)


class NoteForm(serializers.Serializer):
    note = serializers.CharField(max_length=60)


@step("Describe the port")
def describe_port(subscription: PortProduct, note: str) -> State:
    subscription.description = f"{subscription.description} ({note})"
    return {"subscription": subscription, "described": subscription.description}


@modify_workflow("Composition test: describe one port", product_types=["Port"], initial_input_form=NoteForm)
def t_child_port() -> StepList:
    return begin >> describe_port


def one_per_port(port_ids: list) -> list[dict]:
    return [{"subscription_id": str(port_id), "note": "moved"} for port_id in port_ids]


@modify_workflow("Composition test: move a node's ports, each in a child", product_types=["Node"],
                 initial_input_form=PortIdsForm)
def t_move_ports() -> StepList:
    return begin >> subprocesses("t_child_port", one_per_port, result_key="ports",
                                 result=lambda state: state["described"])


# --- a child that waits for input, so the parent has a running child to abort ---------------------------
@inputstep("Confirm the item", form=ConfirmForm)
def confirm_item() -> State:
    return {}


@workflow("Composition test: a child that waits for confirmation", initial_input_form=ItemForm)
def t_child_confirm() -> StepList:
    return begin >> confirm_item >> work_on_item


@workflow("Composition test: children that wait for confirmation", initial_input_form=CountForm)
def t_fan_out_confirm() -> StepList:
    return begin >> subprocesses("t_child_confirm", one_per_item, name="Confirm every item", result_key="items") \
        >> add_up


# --- the same as tasks, whose finished processes may be deleted ------------------------------------------
@task("Composition test: a task child that waits for confirmation", initial_input_form=ItemForm)
def t_task_child() -> StepList:
    return begin >> confirm_item >> work_on_item


@task("Composition test: a task whose children wait for confirmation", initial_input_form=CountForm)
def t_task_fan_out() -> StepList:
    return begin >> subprocesses("t_task_child", one_per_item, name="Confirm every item", result_key="items") \
        >> add_up


@task("Composition test: a task child that works on its item", initial_input_form=ItemForm)
def t_task_child_item() -> StepList:
    return begin >> work_on_item


@task("Composition test: a task whose children are task processes", initial_input_form=CountForm)
def t_task_fans_out_tasks() -> StepList:
    return begin >> subprocesses("t_task_child_item", one_per_item, result_key="items") >> add_up


@task("Composition test: a task whose children are workflow processes", initial_input_form=CountForm)
def t_task_fans_out_workflows() -> StepList:
    return begin >> subprocesses("t_child_item", one_per_item, result_key="items") >> add_up


@workflow("Composition test: a workflow whose children are task processes", initial_input_form=CountForm)
def t_fans_out_tasks() -> StepList:
    return begin >> subprocesses("t_task_child_item", one_per_item, result_key="items") >> add_up


# --- parallel branches ------------------------------------------------------------------------------------
@step("Configure the A end")
def configure_a(tag: str) -> State:
    effect(f"a-end-{tag}")
    return {"a_end": "configured"}


@step("Check the A end")
def check_a(a_end: str) -> State:
    return {"a_checked": a_end == "configured"}


@step("Configure the B end")
def configure_b(tag: str) -> State:
    effect(f"b-end-{tag}")
    if FAILING and -1 in FAILING:
        raise RuntimeError("the B end refused the configuration")
    return {"b_end": "configured"}


@step("Note both ends")
def note_both(tag: str, a_checked: bool, b_end: str) -> State:
    effect(f"both-{tag}")
    return {"both": a_checked and b_end == "configured"}


class TagForm(serializers.Serializer):
    tag = serializers.CharField(max_length=60)


@workflow("Composition test: both ends of a link in parallel", initial_input_form=TagForm)
def t_link_ends() -> StepList:
    return begin >> parallel(configure_a >> check_a, configure_b, name="Configure both ends") >> note_both


@step("Set the colour to red")
def set_red() -> State:
    return {"colour": "red"}


@step("Set the colour to blue")
def set_blue() -> State:
    return {"colour": "blue"}


@workflow("Composition test: two branches that disagree", initial_input_form=TagForm)
def t_branches_disagree() -> StepList:
    return begin >> parallel(set_red, set_blue, name="Paint")
