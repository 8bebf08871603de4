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
    if value is None or isinstance(value, str | int | float | bool):
        return value  # the common case, without a round trip through the encoder
    try:
        return json.loads(json.dumps(value, default=_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StepError(
            f"step {step!r} returned {key!r} = {value!r:.200}, which cannot be stored in the state: "
            f"{exc} is not JSON-serialisable. Return plain data (text, numbers, booleans, lists, dicts) "
            f"or ids, not objects"
        ) from None
