"""Errors of the engine and of operations on processes."""

from __future__ import annotations

from orchestrator_site.errors import Conflict, OrchestratorError


class EnginePaused(OrchestratorError):
    status_code = 503
    default_detail = "The engine is paused: no process can start, resume or be retried until it is resumed."


class WrongProcessStatus(Conflict):
    default_detail = "The process's status does not allow this action."


class IncompatibleWorkflowChange(Conflict):
    default_detail = "The workflow changed since the process started, in a way that makes it impossible to continue."


class ProcessBusy(Conflict):
    default_detail = "A worker is running a step of this process right now."


class StepError(Exception):
    """Raised by the engine inside a step's transaction when the step broke a rule of the contract."""


class ExecutorUnavailable(OrchestratorError):
    status_code = 503
    default_detail = "The executor cannot take processes right now (is the broker reachable?)."


class WorkflowRemoved(Conflict):
    default_detail = "The process's workflow was removed from code; the process can only be aborted."


class AlreadyRunning(WrongProcessStatus):
    default_detail = "The process is already running (or waiting for a worker); it was already retried."
