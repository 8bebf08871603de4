"""The workflow `manage.py bench_engine` runs: M no-op steps, each adding `payload` bytes to the state.

`bench_noop_<M>` without payload, `bench_<M>x<payload>` with. Declared on demand by the command, and at
import when BENCH_ENGINE_STEPS=M (and BENCH_ENGINE_PAYLOAD) is set: the command's Celery workers import
this module (`--include processes.bench_workflow`) to know the workflow.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from workflows.dsl import State, Step, StepList, begin, step
from workflows.models import Target
from workflows.registry import WorkflowSpec, workflow

STEPS_ENV = "BENCH_ENGINE_STEPS"
PAYLOAD_ENV = "BENCH_ENGINE_PAYLOAD"


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


if os.environ.get(STEPS_ENV, "").strip():
    declare_bench_workflow(int(os.environ[STEPS_ENV]), int(os.environ.get(PAYLOAD_ENV, "0") or 0))
