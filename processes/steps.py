"""Calling a step function: parameters injected from the state by name, the return merged into it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from processes.errors import StepError
from processes.state import to_json_value
from subscriptions.domain import SubscriptionModel
from workflows.dsl import REMOVE, Param, Repeat, Step, StepKind

logger = logging.getLogger(__name__)


def _is_domain_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, SubscriptionModel)


def _subscription_id(param: Param, state: dict[str, Any], step: Step) -> Any:
    value = state.get(param.name)
    if isinstance(value, dict):
        value = value.get("subscription_id")
    if isinstance(value, str | uuid.UUID):
        return value
    if "subscription_id" in state:
        return state["subscription_id"]
    raise StepError(
        f"step {step.name!r} needs {param.name!r} ({param.annotation.__name__}), but the state holds no "
        f"subscription id for it (no {param.name!r} and no 'subscription_id' key)"
    )


def _arguments(step: Step, state: dict[str, Any], acting_user: str,
               extra: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[SubscriptionModel]]:
    """The step function's arguments, taken from the state by name (see call_step), and the domain models
    among them."""
    kwargs: dict[str, Any] = {}
    models: list[SubscriptionModel] = []
    for param in step.params:
        if extra and param.name in extra:
            kwargs[param.name] = extra[param.name]
        elif param.name == "state":
            kwargs["state"] = dict(state)
        elif param.name == "acting_user":
            kwargs["acting_user"] = acting_user or state.get("created_by", "")
        elif _is_domain_model(param.annotation):
            model = param.annotation.load(_subscription_id(param, state, step))
            models.append(model)
            kwargs[param.name] = model
        elif param.name in state:
            kwargs[param.name] = state[param.name]
        elif param.has_default:
            kwargs[param.name] = param.default
        else:
            available = ", ".join(sorted(state)) or "nothing"
            raise StepError(
                f"step {step.name!r} needs {param.name!r} from the state, but the state has no such key "
                f"(it has: {available})"
            )

    return kwargs, models


def call_step(step: Step, state: dict[str, Any], *, acting_user: str = "",
              extra: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Run `step` with its parameters taken from `state`; return the new state, what the step changed (its
    delta: keys added, keys changed with their new values, keys removed), and whether it asks to run again
    (it returned `again(...)`).

    A parameter named `state` gets (a copy of) the whole state; one annotated with a domain model
    class gets that subscription loaded; `acting_user` gets who the process now runs for (its creator, or
    whoever retried or resumed it; not stored in the state); any other comes from the key of the same
    name, or its default. `extra` holds values to pass by name that are not part of the state (a callback
    step's URL and token).
    Domain models a step received or returned are saved, in the step's transaction, and stored in the
    state as their subscription id. A key returned with the value REMOVE is taken out of the state.
    """
    kwargs, models = _arguments(step, state, acting_user, extra)
    result = step.func(**kwargs)

    repeat = isinstance(result, Repeat)
    if repeat:
        if step.kind not in (StepKind.STEP, StepKind.RETRY):
            raise StepError(f"step {step.name!r} returned again(...): only a step or retry step can run again")
        result = result.state
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise StepError(
            f"step {step.name!r} returned a {type(result).__name__}; a step returns a dict of keys to add to "
            f"the state, or nothing"
        )
    new_state = dict(state)
    # The delta is worked out from what the step returned only: its cost is that of the step's own
    # output, not of the whole state (which the log no longer stores at every step).
    added: dict[str, Any] = {}
    changed: dict[str, Any] = {}
    removed: list[str] = []
    for key, value in result.items():
        if not isinstance(key, str) or "\x00" in key:
            raise StepError(f"step {step.name!r} returned a key {key!r} that is not text the state can store")
        if value is REMOVE:
            if key in new_state:
                del new_state[key]
                removed.append(key)
            continue
        if isinstance(value, SubscriptionModel):
            if all(value is not m for m in models):
                models.append(value)
            stored: Any = str(value.subscription.subscription_id)
        else:
            stored = to_json_value(value, step=step.name, key=key)
        if key not in state:
            added[key] = stored
        elif state[key] is not stored and state[key] != stored:
            changed[key] = stored
        new_state[key] = stored
    # Saved in the step's transaction: the model's writes commit with the log row, or not at all.
    for model in models:
        model.save()
    return new_state, {"added": added, "changed": changed, "removed": sorted(removed)}, repeat


def call_timer(step: Step, state: dict[str, Any], *, acting_user: str = "") -> Any:
    """Run a timer step's function (parameters from the state, as for any step) and return its answer: the
    moment to wait for. It changes nothing: the state stays as it was."""
    kwargs, _ = _arguments(step, state, acting_user, None)
    return step.func(**kwargs)
