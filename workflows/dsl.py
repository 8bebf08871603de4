"""The workflow DSL: steps, input steps, retry steps, callback steps, timers, conditions, steps that run again,
step groups, and `>>` to chain them."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestrator_site import humanize

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
    CALLBACK = "callback"
    TIMER = "timer"
    CHILDREN = "children"
    GROUP = "group"


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
    # A callback step's validate step, deadline and result key (CallbackSpec); None for other kinds.
    callback: CallbackSpec | None = None
    # A sub-processes or parallel step's children (workflows.compose.ChildrenSpec); None for other kinds.
    children: Any = None
    # A step group's sub-steps (step_group), run one after the other; empty for other kinds.
    substeps: StepList = field(default_factory=lambda: StepList())

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
        return dataclasses.replace(target, condition=predicate)

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


# --- waiting for an external system, and for time -----------------------------------------------------
# Names a callback step's action may take besides the state's keys: where and how to call back. They are
# never stored in the state (the token is a credential, and the state is shown to every reader).
CALLBACK_PARAMS = ("callback_url", "callback_token", "callback_progress_url")


@dataclass(frozen=True)
class CallbackSpec:
    """What a callback step waits for: the answer stored under `result_key`, checked by `validate` (a step
    run in a transaction of its own once the answer came), within `timeout` (None: the setting
    CALLBACK_TIMEOUT_SECONDS)."""

    result_key: str
    validate: Step | None
    timeout: timedelta | None


def callback_step(name: str, *, action: Callable[..., State | None],
                  validate: Callable[..., State | None] | None = None, timeout: timedelta | None = None,
                  result_key: str = "callback_result") -> Step:
    """A step that hands work to an external system and waits for its answer, holding no worker.

    `action` runs like any step (its own transaction; parameters from the state by name) and may also take
    `callback_url` (where the system POSTs its JSON answer; the route's token is part of it),
    `callback_token` and `callback_progress_url`. Once it committed, the process is `awaiting_callback`.
    The answer is stored in the state under `result_key`; then `validate` runs like any step (taking the
    answer by that name) and fails the step (retryable) by raising. No answer within `timeout`: the step
    fails with that reason. A retry runs `action` again with a new token (the old one no longer works), so
    an action must be safe to run again.
    """
    if not isinstance(result_key, str) or not result_key.strip():
        raise TypeError(f"callback step {name!r}: result_key must be a non-empty name, not {result_key!r}")
    if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
        raise TypeError(f"callback step {name!r}: timeout must be a positive timedelta, not {timeout!r}")
    for label, func in (("action", action), ("validate", validate)):
        if func is not None and (not callable(func) or isinstance(func, Step)):
            raise TypeError(f"callback step {name!r}: {label} must be a plain function, not {func!r}")
    acting = _make(name, StepKind.CALLBACK)(action)
    check = _make(name, StepKind.STEP)(validate) if validate is not None else None
    return dataclasses.replace(acting, callback=CallbackSpec(result_key, check, timeout))


def wait_until(name: str) -> Callable[[Callable[..., datetime | str | None]], Step]:
    """A timer: the decorated function (parameters from the state by name) returns the moment to wait for
    (an aware datetime or ISO 8601 text; None or a past moment: no wait). The process then waits, holding no
    worker, in status `waiting` until that moment, and the scheduler's sweep wakes it.

    `@wait_until("Wait for the maintenance window") def window(window_start: str) -> str: return window_start`
    """
    return lambda func: _make(name, StepKind.TIMER)(func)


def human_duration(duration: timedelta) -> str:
    """A duration in whole seconds as people write it: "45 s", "10 min", "2 h 5 min", "3 d 4 h".

    The admin's own format (orchestrator_site.humanize.duration), cut to whole seconds: it names timer steps
    ("Wait 10 min"), so its text must stay the same for a given duration.
    """
    return humanize.duration(max(int(duration.total_seconds()), 0))


def sleep(duration: timedelta, name: str | None = None) -> Step:
    """A timer that waits `duration` from the moment the step runs (see wait_until)."""
    if not isinstance(duration, timedelta) or duration < timedelta(0):
        raise TypeError(f"sleep(...) takes a timedelta of zero or more, not {duration!r}")
    label = name or f"Wait {human_duration(duration)}"

    def moment() -> datetime:
        from django.utils import timezone

        return timezone.now() + duration

    return _make(label, StepKind.TIMER)(moment)


# --- several steps shown and logged as one ---------------------------------------------------------------
# Between a group's name and a sub-step's, in the names of the rows and places that name a sub-step.
GROUP_SEPARATOR = " \u203a "  # a single right-pointing angle quotation mark


def sub_step_label(group: Step, sub: Step) -> str:
    """How a sub-step is named where it shows on its own (a failed row, a suspended process): the group's
    name, GROUP_SEPARATOR, the sub-step's."""
    return f"{group.name}{GROUP_SEPARATOR}{sub.name}"


def step_group(name: str, steps: StepList | Step) -> Step:
    """Several steps shown and logged as one: `step_group("Configure the node", begin >> a >> b >> c)`.

    The group takes one place in the workflow (its name) and writes one log row, holding the state after
    its last sub-step. Each sub-step still runs in a transaction of its own (its writes commit with it). A
    failed sub-step fails the group, and a retry restarts the group at its first sub-step, from the state
    before the group: sub-steps must be safe to run again. Input steps, callback steps and timers work inside
    a group; `done`, `abort`, nested groups and steps that return `again(...)` do not.
    `conditional(predicate)(group)` skips the whole group.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a step group needs a name: step_group(\"Describe the work\", steps), got {name!r}")
    try:
        substeps = as_steplist(steps)
    except TypeError as exc:
        raise TypeError(f"step group {name!r}: {exc}") from None
    if not substeps:
        raise TypeError(f"step group {name!r} has no steps: give it at least one (begin >> a >> b)")
    for sub in substeps:
        if sub.kind == StepKind.GROUP:
            raise TypeError(f"step group {name!r} holds the step group {sub.name!r}: groups cannot be nested; "
                            f"put its steps in {name!r} directly")
        if sub.kind == StepKind.CHILDREN:
            raise TypeError(f"step group {name!r} holds {sub.name!r}, a step that starts child processes: put it "
                            f"before or after the group (its children are a unit of their own)")
        if sub.kind in (StepKind.DONE, StepKind.ABORT):
            raise TypeError(f"step group {name!r} holds {sub.name!r} ({sub.kind}): a group cannot end the process; "
                            f"put {sub.kind} after the group")
    duplicates = sorted({n for n in substeps.names if substeps.names.count(n) > 1})
    if duplicates:
        raise TypeError(f"step group {name!r} has more than one step named {', '.join(map(repr, duplicates))}: "
                        f"sub-step names identify where the group stopped, so they must be unique in it")
    return Step(name=name, func=_noop, kind=StepKind.GROUP, substeps=substeps)


init = Step("Start", _noop)
done = Step("Done", _noop, kind=StepKind.DONE)
abort = Step("Abort", _noop, kind=StepKind.ABORT)


def as_steplist(value: object) -> StepList:
    """`value` as a step list; anything that is not a step or a step list is refused with a clear message."""
    return StepList.coerce(value, after=None)
