"""The workflow `manage.py bench_engine` runs: `bench_noop_<M>`, M no-op steps.

Declared on demand by the command, and at import when BENCH_ENGINE_STEPS=M is set: the command's
Celery workers import this module (`--include processes.bench_workflow`) to know the workflow.
"""

from __future__ import annotations

import os

from workflows.dsl import State, Step, StepList, begin, step
from workflows.models import Target
from workflows.registry import WorkflowSpec, workflow

STEPS_ENV = "BENCH_ENGINE_STEPS"


def declare_bench_workflow(steps: int) -> WorkflowSpec:
    """A system workflow of `steps` no-op steps, each returning a tiny dict."""

    def noop(position: int) -> Step:
        @step(f"Step {position}")
        def body() -> State:
            return {"bench_step": position}

        return body

    def bench() -> StepList:
        chain = begin
        for position in range(1, steps + 1):
            chain = chain >> noop(position)
        return chain

    return workflow(f"Benchmark: {steps} no-op steps", target=Target.SYSTEM, name=f"bench_noop_{steps}")(bench)


if os.environ.get(STEPS_ENV, "").strip():
    declare_bench_workflow(int(os.environ[STEPS_ENV]))
