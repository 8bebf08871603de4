"""The two log formats (LOG_FORMAT): readable plain text, and one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from orchestrator_site.logcontext import FIELDS

# Attributes some loggers add that say nothing a reader needs, or are objects rather than values:
# django.request and django.server pass the request (or its socket) and the server's own time string.
_NOT_SHOWN = ("request", "server_time")


def _plain_value(value: object) -> str:
    text = str(value)
    # Step names have spaces: quote them so `key=value` pairs stay readable and splittable.
    return json.dumps(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


class PlainFormatter(logging.Formatter):
    """`2026-11-30 18:42:44,418 INFO processes.engine: message [process_id=... workflow=... step="..."]`.

    The context (orchestrator_site.logcontext) is shown at the end of the message line when there is any; a
    traceback follows on the next lines as usual.
    """

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s", **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(f"{name}={_plain_value(getattr(record, name))}" for name in FIELDS
                           if getattr(record, name, None) is not None)
        return f"{line} [{context}]" if context else line


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, exception (its traceback, when
    there is one), the context fields that are known, and whatever else the logger passed as `extra`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "{levelname}{name}{message}")
        kwargs.setdefault("style", "{")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger", "exc_info": "exception",
                                            "stack_info": "stack"})
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, *_NOT_SHOWN])
        super().__init__(**kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        # The time first, so a person reading the raw lines sees them in order at a glance.
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)
