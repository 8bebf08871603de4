"""Workflows declared in code: the `@workflow` decorator, its target wrappers, and the registry."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.utils.module_loading import autodiscover_modules

from orchestrator_site.errors import NotFound
from subscriptions.lifecycle import SubscriptionLifecycle
from workflows.dsl import StepKind, StepList, as_steplist, done, init
from workflows.forms import check_form, create_form
from workflows.models import Target

logger = logging.getLogger(__name__)

L = SubscriptionLifecycle

# Lifecycle statuses a workflow may start on, by target, unless the workflow says otherwise.
DEFAULT_ALLOWED_STATUSES: dict[str, tuple[str, ...]] = {
    Target.CREATE: (),
    Target.MODIFY: (L.ACTIVE,),
    Target.TERMINATE: (L.INITIAL, L.PROVISIONING, L.ACTIVE, L.DISABLED),
    Target.VALIDATE: (L.ACTIVE,),
    Target.SYSTEM: (),
}


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow as declared in code."""

    name: str
    description: str
    target: str
    steps: StepList
    initial_input_form: Any = None
    product_types: tuple[str, ...] = ()
    usable_while_out_of_sync: bool = False
    allowed_statuses: tuple[str, ...] = ()
    is_task: bool = False
    # Called as authorize(user, workflow_spec, subscription_or_None) -> bool before a start or retry.
    authorize: Callable[..., bool] | None = None
    module: str = ""
    body: StepList = field(default_factory=StepList)
    # Checked at every start, in order: each returns None (or True) to allow it, or a message (or False)
    # to refuse it with 412. See workflows.predicates.
    run_predicates: tuple[Callable[..., Any], ...] = ()
    # A reconcile workflow may also start on an out-of-sync subscription that no process holds: bringing
    # a drifted subscription back in line is what it is for.
    reconciles: bool = False
    # A branch of a parallel step (workflows.compose): the name of the workflow it belongs to. It runs only as
    # a child of that workflow's processes, never started by itself.
    branch_of: str = ""

    @property
    def needs_subscription(self) -> bool:
        return self.target in (Target.MODIFY, Target.TERMINATE, Target.VALIDATE)

    @property
    def version(self) -> list[str]:
        return self.steps.names


_REGISTRY: dict[str, WorkflowSpec] = {}


def workflow(
    description: str,
    *,
    target: str = Target.SYSTEM,
    initial_input_form: Any = None,
    product_types: Iterable[str] = (),
    usable_while_out_of_sync: bool = False,
    allowed_statuses: Iterable[str] | None = None,
    is_task: bool = False,
    authorize: Callable[..., bool] | None = None,
    name: str | None = None,
    wrap: Callable[[StepList], StepList] | None = None,
    run_predicate: Callable[..., Any] | Iterable[Callable[..., Any]] = (),
    reconciles: bool = False,
) -> Callable[[Callable[[], StepList]], WorkflowSpec]:
    """Declare a workflow: the decorated function returns its steps (`begin >> a >> b`).

    Without a wrapper the steps are used as given; the target wrappers below add the standard steps.
    `run_predicate`: one or more start conditions (workflows.predicates), checked at every start.
    """
    predicates = (run_predicate,) if callable(run_predicate) else tuple(run_predicate)
    for predicate in predicates:
        if not callable(predicate):
            raise TypeError(f"workflow {description!r}: run_predicate must be callables, not {predicate!r}")
    if target not in Target.values:
        raise TypeError(f"workflow {description!r}: target must be one of {', '.join(Target.values)}, not {target!r}")
    check_form(initial_input_form, where=f"workflow {description!r}")
    statuses = tuple(DEFAULT_ALLOWED_STATUSES[target] if allowed_statuses is None else allowed_statuses)
    unknown = [s for s in statuses if s not in L.values]
    if unknown:
        raise TypeError(f"workflow {description!r}: unknown lifecycle status(es) {', '.join(unknown)}")

    def decorate(func: Callable[[], StepList]) -> WorkflowSpec:
        workflow_name = name or func.__name__
        form = initial_input_form
        if target == Target.CREATE:
            form = create_form(initial_input_form, tuple(product_types), workflow_name)
        try:
            body = as_steplist(func())
        except TypeError as exc:
            raise TypeError(f"workflow {workflow_name}: {exc}") from exc
        steps = wrap(body) if wrap else body
        if not steps or steps[0] is not init:
            # The engine logs the first step with the initial state when the process is created.
            steps = init >> steps
        if steps[-1].kind not in (StepKind.DONE, StepKind.ABORT) or steps[-1].condition is not None:
            # A conditional last step that is skipped would leave the process past its end: end it with done.
            _refuse_conditional_done(workflow_name, steps)
            steps = steps >> done
        _refuse_unreachable_steps(workflow_name, steps, body if wrap else None, target)
        duplicates = sorted({n for n in steps.names if steps.names.count(n) > 1})
        if duplicates:
            raise TypeError(
                f"workflow {workflow_name} has more than one step named {', '.join(map(repr, duplicates))}: step "
                f"names identify a process's position when it is retried, so they must be unique"
            )
        steps = _declare_branches(workflow_name, steps, func.__module__)
        spec = WorkflowSpec(
            name=workflow_name,
            description=description,
            target=target,
            steps=steps,
            initial_input_form=form,
            product_types=tuple(product_types),
            usable_while_out_of_sync=usable_while_out_of_sync,
            allowed_statuses=statuses,
            is_task=is_task,
            authorize=authorize,
            module=func.__module__,
            body=body,
            run_predicates=predicates,
            reconciles=reconciles,
        )
        register(spec)
        return spec

    return decorate


def _declare_branches(workflow_name: str, steps: StepList, module: str) -> StepList:
    """Declare a workflow for each branch of each parallel step (named `<workflow>.parallel<k>.<i>`), and give
    the step their names: the branches run as child processes of that workflow."""
    out, k = [], 0
    for item in steps:
        children = item.children
        if item.kind != StepKind.CHILDREN or children is None or not children.is_parallel:
            out.append(item)
            continue
        k += 1
        names = []
        for i, branch in enumerate(children.branches, start=1):
            branch_name = f"{workflow_name}.parallel{k}.{i}"
            if len(branch_name) > 100:
                raise TypeError(f"workflow {workflow_name}: its name is too long for the branches of its parallel "
                                f"steps ({branch_name!r} is over 100 characters)")
            branch_steps = init >> branch >> done
            duplicates = sorted({n for n in branch_steps.names if branch_steps.names.count(n) > 1})
            if duplicates:
                raise TypeError(f"workflow {workflow_name}: branch {i} of {item.name!r} has more than one step "
                                f"named {', '.join(map(repr, duplicates))}")
            register(WorkflowSpec(
                name=branch_name, description=f"Branch {i} of {item.name!r} in {workflow_name}",
                target=Target.SYSTEM, steps=branch_steps, module=module, body=branch, branch_of=workflow_name))
            names.append(branch_name)
        out.append(dataclasses.replace(item, children=dataclasses.replace(children, branch_workflows=tuple(names))))
    return StepList(out)


def _refuse_conditional_done(workflow_name: str, steps: StepList) -> None:
    last = steps[-1]
    if last.kind == StepKind.DONE:
        raise TypeError(
            f"workflow {workflow_name}: its last step, step {len(steps)} ({last.name!r}), is a conditional done: "
            f"when its condition is false no step would be left to complete the process; drop the condition"
        )


def _refuse_unreachable_steps(workflow_name: str, steps: StepList, body: StepList | None, target: str) -> None:
    """Refuse an unconditional done or abort before the last step: the steps after it could never run.

    A conditional one stays allowed: when its condition is false the process goes on with the next step.
    """
    for position, ending in enumerate(steps[:-1], start=1):
        if ending.kind not in (StepKind.DONE, StepKind.ABORT) or ending.condition is not None:
            continue
        never = ", ".join(repr(name) for name in steps.names[position:])
        if ending.kind == StepKind.DONE:
            does, fix = "completes", "remove it or the steps after it"
        else:
            does, fix = "aborts", "abort only when needed with conditional(predicate)(abort), or end the workflow there"
        if body is not None and ending in body:
            fix += f" (the standard steps of a {target} workflow come after its body)"
        raise TypeError(
            f"workflow {workflow_name}: step {position} ({ending.name!r}) {does} the process unconditionally, "
            f"so the steps after it could never run: {never}; {fix}"
        )


def register(spec: WorkflowSpec) -> None:
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing.module != spec.module:
        raise TypeError(
            f"workflow name {spec.name!r} is declared twice: in {existing.module} and in {spec.module}"
        )
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    """Forget a workflow (for tests that declare their own)."""
    _REGISTRY.pop(name, None)


def get_workflow(name: str) -> WorkflowSpec:
    autodiscover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NotFound(f"unknown workflow {name!r}; known workflows: {known}", workflow=name) from None


def all_workflows() -> dict[str, WorkflowSpec]:
    autodiscover()
    return dict(sorted(_REGISTRY.items()))


_discovered = False
_discovering = False
# Re-entrant: a workflows module being imported may itself look a workflow up (in the same thread).
_discovery_lock = threading.RLock()


def autodiscover() -> None:
    """Import the `workflows` module of every installed app (as the admin does with `admin.py`), once.

    Done by the app's ready() at start-up; here too for callers that come first. Under a lock, and marked
    done only once every module imported: a thread that reads the registry while another is still
    filling it waits for it, instead of finding it half-empty ("unknown workflow").
    """
    global _discovered, _discovering
    if _discovered:
        return
    with _discovery_lock:
        if _discovered or _discovering:
            return  # done meanwhile, or a module of this very discovery looks something up
        _discovering = True
        try:
            autodiscover_modules("workflows")  # an import error propagates, and the next call tries again
            _discovered = True
        finally:
            _discovering = False


# --- target wrappers: the standard steps around a body ---------------------------------------------
def _wrapped(target: str, wrap: Callable[[StepList], StepList]) -> Callable[..., Any]:
    def decorator(description: str, **options: Any) -> Callable[[Callable[[], StepList]], WorkflowSpec]:
        return workflow(description, target=target, wrap=wrap, **options)

    decorator.__name__ = f"{target}_workflow"
    return decorator


def _create(body: StepList) -> StepList:
    from workflows import steps

    return init >> steps.create_subscription >> steps.link_subscription >> body >> steps.set_active \
        >> steps.resync >> done


def _modify(body: StepList) -> StepList:
    from workflows import steps

    return init >> steps.link_subscription >> steps.unsync >> body >> steps.resync >> done


def _terminate(body: StepList) -> StepList:
    from workflows import steps

    return init >> steps.link_subscription >> steps.unsync >> body >> steps.set_terminated \
        >> steps.resync >> done


def _validate(body: StepList) -> StepList:
    from workflows import steps

    # No unsync, no resync: a validation reads and never takes the subscription, so it runs also while
    # another process holds it (and that process keeps it).
    return init >> steps.link_subscription >> body >> done


def _reconcile(body: StepList) -> StepList:
    from workflows import steps

    return init >> steps.link_subscription >> steps.unsync_for_reconcile >> body >> steps.resync >> done


def _task(body: StepList) -> StepList:
    return init >> body >> done


create_workflow = _wrapped(Target.CREATE, _create)
modify_workflow = _wrapped(Target.MODIFY, _modify)
terminate_workflow = _wrapped(Target.TERMINATE, _terminate)


def validate_workflow(description: str, **options: Any) -> Callable[[Callable[[], StepList]], WorkflowSpec]:
    """A read-only check of a subscription against the outside world; runs while it is out of sync too.

    Its steps must not change the subscription: they fail (retryable) when what they check is wrong.
    """
    options.setdefault("usable_while_out_of_sync", True)
    return workflow(description, target=Target.VALIDATE, wrap=_validate, **options)


def reconcile_workflow(description: str, **options: Any) -> Callable[[Callable[[], StepList]], WorkflowSpec]:
    """Bring a subscription back in line with the outside world (the source of truth) after drift.

    Standard steps: link, "Unsync for reconcile" (takes the subscription like unsync, and also when it is
    out of sync with no process holding it: drift left behind by an aborted process), the body (read the
    outside world, write what it says into the subscription), resync. The before/after of what it changed
    is on the process page like any modify's.
    """
    options.setdefault("allowed_statuses", (L.ACTIVE, L.DISABLED))
    return workflow(description, target=Target.MODIFY, wrap=_reconcile, reconciles=True, **options)


def task(description: str, **options: Any) -> Callable[[Callable[[], StepList]], WorkflowSpec]:
    """A system task: no subscription, no standard steps beyond start and done."""
    return workflow(description, target=Target.SYSTEM, is_task=True, wrap=_task, **options)
