"""Composition in the DSL: `subprocesses` (one child process per item) and `parallel` (branches of steps run as
children), both joined before the parent goes on. The engine's side is processes.joins."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflows.dsl import State, Step, StepKind, StepList, _make, as_steplist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChildrenSpec:
    """What a children step starts, and how their results come back.

    - `workflow`: the child workflow's name (sub-processes), or "" for parallel branches, whose workflows
      (`branch_workflows`, one per branch) the registry declares with the parent workflow.
    - `items`: a step function (parameters from the state by name) returning one input per child.
    - `result_key`: where the children's results go in the parent's state (sub-processes: a list in item
      order); `result`, if given, picks what of each child's final state is kept.
    """

    workflow: str
    items: Step | None
    result_key: str
    result: Callable[[State], Any] | None = None
    branches: tuple[StepList, ...] = ()
    branch_workflows: tuple[str, ...] = ()

    @property
    def is_parallel(self) -> bool:
        return bool(self.branches)


def subprocesses(workflow: Any, inputs_from_state: Callable[..., list[dict[str, Any]]], *, name: str | None = None,
                 result_key: str = "children", result: Callable[[State], Any] | None = None) -> Step:
    """A step that starts one child process of `workflow` per item and waits, holding no worker, until every
    child has ended; then the process goes on with the children's results in `state[result_key]`, a list in
    item order.

    `inputs_from_state` takes parameters from the state by name (like a step) and returns a list of dicts:
    each is a child's initial input, checked by the child workflow's form. A `subscription_id` in an item is
    the subscription the child works on (a modify or terminate workflow): each child holds its own, and the
    start is refused, like any start, while another process holds it. Children are created in this step's
    transaction: all of them or none, and never twice for one item. `result(child_state)` picks what of a
    child's final state is kept (default: all of it but the engine's own keys).

    A failed child leaves the parent waiting; retrying (or skipping the step of) the child lets it go on.
    Aborting the parent aborts its unfinished children.
    """
    workflow_name = getattr(workflow, "name", workflow)
    if not isinstance(workflow_name, str) or not workflow_name.strip():
        raise TypeError(f"subprocesses(...) takes a workflow (its name or its spec), not {workflow!r}")
    if not callable(inputs_from_state) or isinstance(inputs_from_state, Step):
        raise TypeError(f"subprocesses({workflow_name!r}, ...): inputs_from_state must be a plain function "
                        f"returning one input per child, not {inputs_from_state!r}")
    if not isinstance(result_key, str) or not result_key.strip():
        raise TypeError(f"subprocesses({workflow_name!r}, ...): result_key must be a non-empty name, "
                        f"not {result_key!r}")
    if result is not None and not callable(result):
        raise TypeError(f"subprocesses({workflow_name!r}, ...): result must be a function of a child's state")
    label = name or f"Run {workflow_name} for each item"
    items = _make(label, StepKind.STEP)(inputs_from_state)
    return Step(name=label, func=inputs_from_state, kind=StepKind.CHILDREN, params=items.params,
                children=ChildrenSpec(workflow_name, items, result_key, result))


def parallel(*branches: Step | StepList, name: str | None = None) -> Step:
    """A step that runs each branch (a step or `a >> b` list) as a child process of its own, in parallel, and
    waits, holding no worker, until all have ended; then the process goes on with every branch's changes to
    the state merged in (branch order). Two branches that set one key to different values fail the step.

    Each branch starts from the state the process had at this step, and is a full process: its own log,
    retry and abort. Branches are small steps of this workflow; for work on other subscriptions use
    `subprocesses`.
    """
    if len(branches) < 2:
        raise TypeError(f"parallel(...) takes two or more branches, got {len(branches)}")
    lists = []
    for position, branch in enumerate(branches, start=1):
        try:
            steps = as_steplist(branch)
        except TypeError as exc:
            raise TypeError(f"parallel(...): branch {position}: {exc}") from None
        if not steps:
            raise TypeError(f"parallel(...): branch {position} has no steps")
        for item in steps:
            if item.kind in (StepKind.DONE, StepKind.ABORT, StepKind.INPUT):
                raise TypeError(f"parallel(...): branch {position} has {item!r}: a branch runs unattended and ends "
                                f"when its steps did (no done, abort or input steps in a branch)")
        lists.append(steps)
    label = name or "Parallel: " + " | ".join(steps[0].name for steps in lists)
    return Step(name=label, func=_no_items, kind=StepKind.CHILDREN,
                children=ChildrenSpec("", None, "", None, tuple(lists)))


def _no_items() -> None:
    return None
