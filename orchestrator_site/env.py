"""Settings read from the environment: booleans, whole numbers and lists, a bad value refused by name."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


class BadEnvironmentValue(ImproperlyConfigured):
    """An environment variable holds a value its setting cannot take; the message names both."""


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean from the environment; refuse anything that is not clearly yes or no."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise BadEnvironmentValue(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """Read a whole number from the environment; refuse anything else, or one below `minimum`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise BadEnvironmentValue(f"{name}={raw!r} is not a whole number of at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list from the environment (blank items dropped)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
