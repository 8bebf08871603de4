"""Errors about workflows: declaring, starting and the standard steps' refusals."""

from __future__ import annotations

from orchestrator_site.errors import Conflict, OrchestratorError


class SubscriptionOutOfSync(Conflict):
    """A workflow needs an in-sync subscription, and this one is held by another process."""

    default_detail = "The subscription is out of sync: another process is working on it."


class WorkflowNotStartable(OrchestratorError):
    """The workflow cannot start on this subscription (lifecycle status, product)."""

    status_code = 412
    default_detail = "The workflow cannot start on this subscription."
