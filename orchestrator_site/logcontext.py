"""What a log line is about (the request, the process and its step), kept in contextvars and added to records.

The request id middleware (orchestrator_site.request_id) and the engine (processes.engine) set these; the
ContextFilter, configured on the console handler in settings.LOGGING, copies them onto every record that
handler writes, whichever logger it came from (ours, Django's, third parties'). contextvars, not
thread-locals: each thread, and each asyncio task, sees only its own values.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token

# The fields, in the order they are shown; a record carries only those that are known.
FIELDS = ("request_id", "process_id", "workflow", "step")

_request_id: ContextVar[str | None] = ContextVar("log_request_id", default=None)
_process_id: ContextVar[str | None] = ContextVar("log_process_id", default=None)
# The workflow and the step together: a step boundary is one set and one reset, the engine's whole cost.
_step: ContextVar[tuple[str, str] | None] = ContextVar("log_step", default=None)


def request_id() -> str | None:
    """The id of the request being handled here, if any."""
    return _request_id.get()


def bind_request_id(value: str | None) -> Token[str | None]:
    """Lines logged from here on (in this context) carry `value` as their request id; undo with reset_request_id."""
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


def forget_request_id() -> None:
    """The request is over: later lines of this thread carry no request id (no token at hand: see request_id.py)."""
    _request_id.set(None)


def bind_process(process_id: object) -> Token[str | None]:
    return _process_id.set(str(process_id))


def reset_process(token: Token[str | None]) -> None:
    _process_id.reset(token)


def bind_step(workflow: str, step: str) -> Token[tuple[str, str] | None]:
    return _step.set((workflow, step))


def reset_step(token: Token[tuple[str, str] | None]) -> None:
    _step.reset(token)


def current() -> dict[str, str]:
    """The known fields, by name (for tests and for code that wants to pass them on)."""
    found = {"request_id": _request_id.get(), "process_id": _process_id.get()}
    step = _step.get()
    if step is not None:
        found["workflow"], found["step"] = step
    return {name: value for name, value in found.items() if value is not None}


class ContextFilter(logging.Filter):
    """Add the known context fields to each record as attributes (never dropping a record).

    A value the caller passed itself (`extra={"process_id": ...}`) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request = _request_id.get()
        if request is not None and not hasattr(record, "request_id"):
            record.request_id = request
        process = _process_id.get()
        if process is not None and not hasattr(record, "process_id"):
            record.process_id = process
        step = _step.get()
        if step is not None and not hasattr(record, "step"):
            record.workflow, record.step = step
        return True
