"""The scalar types a domain model field may hold, how each is read from and written to its text column,
and FieldSpec (what a field holds, read from its annotation)."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import logging
import typing
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from subscriptions.errors import DomainModelError

logger = logging.getLogger(__name__)

_MISSING = object()


# --- scalar types: how each is read from and written to the text column ----------------------------
def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"true", "1", "yes"}:
        return True
    if isinstance(raw, str) and raw.strip().lower() in {"false", "0", "no"}:
        return False
    raise ValueError("not a boolean")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError("not an integer")
    return int(raw)


def _parse_decimal(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw))
    except InvalidOperation as exc:
        raise ValueError("not a decimal number") from exc


def _parse_datetime(raw: Any) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        return raw
    return dt.datetime.fromisoformat(str(raw))


def _parse_date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
        return raw
    return dt.date.fromisoformat(str(raw))


_SCALARS: dict[type, typing.Callable[[Any], Any]] = {
    str: lambda raw: raw if isinstance(raw, str) else _refuse_non_str(raw),
    int: _parse_int,
    bool: _parse_bool,
    Decimal: _parse_decimal,
    uuid.UUID: lambda raw: raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)),
    ipaddress.IPv4Address: lambda raw: ipaddress.IPv4Address(str(raw)),
    ipaddress.IPv6Address: lambda raw: ipaddress.IPv6Address(str(raw)),
    ipaddress.IPv4Network: lambda raw: ipaddress.IPv4Network(str(raw)),
    ipaddress.IPv6Network: lambda raw: ipaddress.IPv6Network(str(raw)),
    ipaddress.IPv4Interface: lambda raw: ipaddress.IPv4Interface(str(raw)),
    ipaddress.IPv6Interface: lambda raw: ipaddress.IPv6Interface(str(raw)),
    dt.date: _parse_date,
    dt.datetime: _parse_datetime,
}


def _refuse_non_str(raw: Any) -> str:
    raise ValueError(f"expected text, got {type(raw).__name__}")


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# --- field declarations --------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """What a domain-model field holds, read from its annotation."""

    name: str
    kind: str  # "scalar", "block" or "list"
    type: type
    optional: bool
    default: Any = _MISSING

    def parse(self, owner: str, raw: Any) -> Any:
        """Convert `raw` to this field's type, or raise an error naming block, field and value."""
        if raw is None:
            return None
        if self.kind != "scalar":
            expected = f"list of {self.type.__name__}" if self.kind == "list" else self.type.__name__
            raise DomainModelError(
                f"{owner}.{self.name}: {raw!r} is not a {expected}",
                errors={f"{owner}.{self.name}": [f"expected {expected}"]},
            )
        try:
            if isinstance(self.type, type) and issubclass(self.type, enum.Enum):
                return raw if isinstance(raw, self.type) else self.type(raw)
            return _SCALARS[self.type](raw)
        except (ValueError, TypeError) as exc:
            raise DomainModelError(
                f"{owner}.{self.name}: {raw!r} is not a valid {self.type.__name__} ({exc})",
                errors={f"{owner}.{self.name}": [f"{raw!r} is not a valid {self.type.__name__}"]},
                block=owner,
                field=self.name,
                value=raw,
            ) from exc
