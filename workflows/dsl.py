"""The workflow DSL: steps, input steps, retry steps, conditions, steps that run again, and `>>` to chain them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

State = dict[str, Any]


class _Remove:
    """The value a step returns for a key to take it out of the state: `return {"scratch": REMOVE}`."""

    _instance: _Remove | None = None

    def __new__(cls) -> _Remove:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REMOVE"

    def __reduce__(self) -> str:
        return "REMOVE"


REMOVE = _Remove()


class StepKind(StrEnum):
    STEP = "step"
    INPUT = "input"
    RETRY = "retry"
    DONE = "done"
    ABORT = "abort"


@dataclass(frozen=True)
class Param:
    """One parameter of a step function, injected from the state by name."""

    name: str
    annotation: Any
    has_default: bool
    default: Any = None


@dataclass(frozen=True, eq=False)
class Step:
    """One piece of work of a workflow: a function run in its own transaction by the engine."""

    name: str
    func: Callable[..., State | Repeat | None]
    kind: StepKind = StepKind.STEP
    form: Any = None
    condition: Callable[[State], bool] | None = None
    params: tuple[Param, ...] = field(default=())

    def __rshift__(self, other: Step | StepList) -> StepList:
        return StepList([self]) >> other

    def __rrshift__(self, other: object) -> StepList:
        return StepList.coerce(other, after=None) >> self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself (for unit tests of a step)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r}>"


class StepList(tuple[Step, ...]):
    """An ordered list of steps. `a >> b` appends; anything that is not a step is refused at once."""

    def __new__(cls, steps: Iterable[Step] = ()) -> StepList:
        return super().__new__(cls, steps)

    @classmethod
    def coerce(cls, other: object, *, after: StepList | None) -> StepList:
        if isinstance(other, Step):
            return cls([other])
        if isinstance(other, StepList):
            return other
        where = f" after {after[-1].name!r}" if after else ""
        hint = ""
        if callable(other) and not isinstance(other, type):
            hint = (
                f"; {getattr(other, '__name__', other)!r} is a plain function: decorate it with "
                f"@step(\"...\") (or @inputstep/@retrystep)"
            )
        raise TypeError(
            f"cannot chain {other!r} (a {type(other).__name__}){where}: only steps and step lists can be "
            f"chained with >>{hint}"
        )

    def __rshift__(self, other: object) -> StepList:  # type: ignore[override]
        return StepList((*self, *StepList.coerce(other, after=self)))

    def __iter__(self) -> Iterator[Step]:
        return super().__iter__()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self]

    def __repr__(self) -> str:
        return " >> ".join(s.name for s in self) or "begin"


begin = StepList()


def _params(func: Callable[..., Any]) -> tuple[Param, ...]:
    try:
        hints = inspect.get_annotations(func, eval_str=True)
    except NameError:
        # An annotation naming something not importable at declaration time: read it as a string.
        hints = inspect.get_annotations(func)
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"step function {func.__qualname__} takes *{p.name}: steps get their inputs from the state by "
                f"name; take `state` to get the whole state"
            )
        has_default = p.default is not inspect.Parameter.empty
        params.append(Param(p.name, hints.get(p.name), has_default, p.default if has_default else None))
    return tuple(params)


def _make(name: str, kind: StepKind, form: Any = None) -> Callable[[Callable[..., Any]], Step]:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a step needs a name: use @{kind}(\"Describe the work\"), got {name!r}")

    def decorate(func: Callable[..., Any]) -> Step:
        return Step(name=name, func=func, kind=kind, form=form, params=_params(func))

    return decorate


def step(name: str) -> Callable[[Callable[..., Any]], Step]:
    """A step: `@step("Update IPAM") def update_ipam(node_name: str) -> State: ...`."""
    return _make(name, StepKind.STEP)


def retrystep(name: str) -> Callable[[Callable[..., Any]], Step]:
    """A step that, when it fails, is retried automatically with exponential backoff."""
    return _make(name, StepKind.RETRY)


def inputstep(name: str, *, form: Any) -> Callable[[Callable[..., Any]], Step]:
    """A step that suspends the process until a user submits `form` (a DRF serializer class).

    The function may return initial values for the form (from the state); the validated input is
    merged into the state when the process is resumed.
    """
    from workflows.forms import check_form

    check_form(form, where=f"input step {name!r}")
    return _make(name, StepKind.INPUT, form=form)


def conditional(predicate: Callable[[State], bool]) -> Callable[[Step], Step]:
    """Run the step only when `predicate(state)` is true; otherwise log it as skipped."""

    def wrap(target: Step) -> Step:
        if not isinstance(target, Step):
            raise TypeError(f"conditional(...) applies to a step, not {target!r}")
        return Step(target.name, target.func, target.kind, target.form, predicate, target.params)

    return wrap


def _noop() -> None:
    return None


@dataclass(frozen=True)
class Repeat:
    """A step's answer "log this and run me again" (made by `again`): `state` is merged into the state and
    logged like any step's return, and the process stays at this step for its next run."""

    state: State


def again(state: State | None = None) -> Repeat:
    """Return `again({...})` from a step (or retry step) to have it run again once this run has committed,
    in a transaction and log row of its own; return a plain dict (or nothing) when the work is done.

    Keep a cursor in `state` (the last item handled) and start from it: every run, also one after a crash,
    a failure and retry, or a pause, starts from the state that the last committed run left.
    """
    return Repeat(dict(state or {}))


init = Step("Start", _noop)
done = Step("Done", _noop, kind=StepKind.DONE)
abort = Step("Abort", _noop, kind=StepKind.ABORT)


def as_steplist(value: object) -> StepList:
    """`value` as a step list; anything that is not a step or a step list is refused with a clear message."""
    return StepList.coerce(value, after=None)
