"""The workflows `manage.py bench_engine` runs: M no-op steps, each adding `payload` bytes to the state.

`bench_noop_<M>` without payload, `bench_<M>x<payload>` with; for `--fanout`, `bench_fanout_<M>`, a parent
that starts one `bench_child_<M>` (M no-op steps) per item and then uses their merged results. Declared on
demand by the command, and at import when BENCH_ENGINE_STEPS=M (and BENCH_ENGINE_PAYLOAD, or
BENCH_ENGINE_FANOUT=1) is set: the command's Celery workers import this module (`--include
processes.bench_workflow`) to know the workflows.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from rest_framework import serializers

from workflows.compose import subprocesses
from workflows.dsl import State, Step, StepList, begin, step
from workflows.models import Target
from workflows.registry import WorkflowSpec, workflow

STEPS_ENV = "BENCH_ENGINE_STEPS"
PAYLOAD_ENV = "BENCH_ENGINE_PAYLOAD"
FANOUT_ENV = "BENCH_ENGINE_FANOUT"
FANOUT_MAX = 10_000
CHILDREN_KEY = "children"
# The fan-out parent's steps after Start, by name: the children step (logged twice: "awaiting children"
# when it starts them, "success" when it merges their results) and the step that uses the results.
FANOUT_STEP = "Run a child per item"
USE_RESULTS_STEP = "Use the merged results"


def bench_workflow_name(steps: int, payload: int = 0) -> str:
    return f"bench_{steps}x{payload}" if payload else f"bench_noop_{steps}"


def step_result(position: int, payload: int) -> dict[str, Any]:
    """What body step `position` returns: its number, and with a payload a new key of that many bytes
    (so the state grows by `payload` bytes with every step). Random text: a repeated character would be
    compressed away by the database and hide what storing it costs."""
    result: dict[str, Any] = {"bench_step": position}
    if payload:
        result[f"payload_{position}"] = base64.b64encode(os.urandom(payload)).decode()[:payload]
    return result


def declare_bench_workflow(steps: int, payload: int = 0) -> WorkflowSpec:
    """A system workflow of `steps` steps, each returning step_result()."""

    def noop(position: int) -> Step:
        @step(f"Step {position}")
        def body() -> State:
            return step_result(position, payload)

        return body

    def bench() -> StepList:
        chain = begin
        for position in range(1, steps + 1):
            chain = chain >> noop(position)
        return chain

    title = f"Benchmark: {steps} no-op steps" + (f" adding {payload} bytes each" if payload else "")
    return workflow(title, target=Target.SYSTEM, name=bench_workflow_name(steps, payload))(bench)


def bench_fanout_names(steps: int) -> tuple[str, str]:
    """(parent, child) workflow names of the fan-out benchmark with children of `steps` steps."""
    return f"bench_fanout_{steps}", f"bench_child_{steps}"


class FanoutForm(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=FANOUT_MAX)


class ChildForm(serializers.Serializer):
    item = serializers.IntegerField(min_value=0, max_value=FANOUT_MAX)


def one_child_per_item(count: int) -> list[dict[str, Any]]:
    return [{"item": item} for item in range(count)]


@step(USE_RESULTS_STEP)
def use_merged_results(children: list[dict[str, Any]]) -> State:
    # Reads every child's result, so a join that merged too few (or the wrong ones) shows in the state.
    return {"merged_items": len(children), "merged_item_order": [child.get("item") for child in children]}


def declare_fanout_workflows(steps: int) -> tuple[WorkflowSpec, WorkflowSpec]:
    """(parent, child): a child of `steps` no-op steps taking an `item`, and a parent taking a `count` whose
    step starts `count` children (subprocesses) and whose next step uses their merged results."""
    parent_name, child_name = bench_fanout_names(steps)

    def noop(position: int) -> Step:
        @step(f"Step {position}")
        def body() -> State:
            return step_result(position, 0)

        return body

    def child() -> StepList:
        chain = begin
        for position in range(1, steps + 1):
            chain = chain >> noop(position)
        return chain

    def parent() -> StepList:
        return begin >> subprocesses(child_name, one_child_per_item, name=FANOUT_STEP,
                                     result_key=CHILDREN_KEY) >> use_merged_results

    child_spec = workflow(f"Benchmark: a child of {steps} no-op steps", target=Target.SYSTEM,
                          initial_input_form=ChildForm, name=child_name)(child)
    parent_spec = workflow(f"Benchmark: one child of {steps} no-op steps per item", target=Target.SYSTEM,
                           initial_input_form=FanoutForm, name=parent_name)(parent)
    return parent_spec, child_spec


if os.environ.get(STEPS_ENV, "").strip():
    if os.environ.get(FANOUT_ENV, "").strip() == "1":
        declare_fanout_workflows(int(os.environ[STEPS_ENV]))
    else:
        declare_bench_workflow(int(os.environ[STEPS_ENV]), int(os.environ.get(PAYLOAD_ENV, "0") or 0))
