"""Exception classes shared by every app: each carries an HTTP status code and a default message."""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose.

    Like DRF's exceptions, each class has a status code and a default message, so the API, the admin
    and the command line can all report it the same way.
    """

    status_code: int = 400
    default_detail: str = "The orchestrator refused the request."

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 body: dict[str, Any] | None = None, **context: Any) -> None:
        self.detail = detail or self.default_detail
        self.errors = errors or {}
        # More of the answer, for clients to act on (the related subscriptions that hold a start back).
        self.body = body or {}
        self.context = context
        super().__init__(self.detail)

    def __str__(self) -> str:
        return self.detail


class NotFound(OrchestratorError):
    status_code = 404
    default_detail = "Not found."


class Conflict(OrchestratorError):
    status_code = 409
    default_detail = "The request conflicts with the current state."


class InvalidInput(OrchestratorError):
    status_code = 400
    default_detail = "Invalid input."
