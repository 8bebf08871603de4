"""Process state as plain JSON: what a step may return and how common Python values are stored."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import uuid
from decimal import Decimal
from typing import Any

from processes.errors import StepError

# Values stored as their text form (documented: a step reads them back as strings).
_AS_TEXT = (
    uuid.UUID, Decimal,
    ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
    ipaddress.IPv4Interface, ipaddress.IPv6Interface,
)


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, _AS_TEXT):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def to_json_value(value: Any, *, step: str, key: str) -> Any:
    """`value` as plain JSON data, or a StepError saying which key of which step cannot be stored."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _nul(step, key, value)
        return value
    if value is None or isinstance(value, int | float | bool):
        return value  # the common case, without a round trip through the encoder
    try:
        text = json.dumps(value, default=_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepError(
            f"step {step!r} returned {key!r} = {value!r:.200}, which cannot be stored in the state: "
            f"{exc} is not JSON-serialisable. Return plain data (text, numbers, booleans, lists, dicts) "
            f"or ids, not objects"
        ) from None
    data = json.loads(text)
    if "\\u0000" in text and _holds_nul(data):  # the text test is cheap; the walk confirms (a "\\u0000" typed)
        raise _nul(step, key, value)
    return data


def _holds_nul(data: Any) -> bool:
    if isinstance(data, str):
        return "\x00" in data
    if isinstance(data, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_holds_nul(item) for item in data)
    return False


def _nul(step: str, key: str, value: Any) -> StepError:
    # PostgreSQL's jsonb (and text) cannot hold the NUL character: refused here, with the key named,
    # instead of as a database error while the step is logged.
    return StepError(
        f"step {step!r} returned {key!r} = {value!r:.200}, which holds a NUL character (\\x00) that the state "
        f"cannot store; remove it (or encode the data, e.g. as base64)"
    )


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` merged into a copy of `base`: mappings in both are merged key by key, at any depth; any other
    value (a list, a number, text, null) in `update` replaces what `base` had. Neither argument is changed.

    So an input step's `{"sub": {"a": 5}}` over a state holding `{"sub": {"a": 1, "b": 2}}` gives
    `{"sub": {"a": 5, "b": 2}}`: nothing the user did not give is lost.
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
