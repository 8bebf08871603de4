"""Calling a step function: parameters injected from the state by name, the return merged into it."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from processes.errors import StepError
from processes.state import to_json_value
from subscriptions.domain import SubscriptionModel
from workflows.dsl import Param, Repeat, Step, StepKind

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


def call_step(step: Step, state: dict[str, Any], *, acting_user: str = "") -> dict[str, Any] | Repeat:
    """Run `step` with its parameters taken from `state`; return the new state (as `Repeat(new state)` when
    the step returned `again(...)`: it asks to run again).

    A parameter named `state` gets (a copy of) the whole state; one annotated with a domain model
    class gets that subscription loaded; `acting_user` gets who the process now runs for (its creator, or
    whoever retried or resumed it; not stored in the state); any other comes from the key of the same
    name, or its default.
    Domain models a step received or returned are saved, in the step's transaction, and stored in the
    state as their subscription id.
    """
    kwargs: dict[str, Any] = {}
    models: list[SubscriptionModel] = []
    for param in step.params:
        if param.name == "state":
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
    for key, value in result.items():
        if not isinstance(key, str) or "\x00" in key:
            raise StepError(f"step {step.name!r} returned a key {key!r} that is not text the state can store")
        if isinstance(value, SubscriptionModel):
            if all(value is not m for m in models):
                models.append(value)
            new_state[key] = str(value.subscription.subscription_id)
        else:
            new_state[key] = to_json_value(value, step=step.name, key=key)
    # Saved in the step's transaction: the model's writes commit with the log row, or not at all.
    for model in models:
        model.save()
    return Repeat(new_state) if repeat else new_state
