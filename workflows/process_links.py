"""What the standard steps need from the app that runs processes, which provides it at start-up.

The workflows app declares workflows and their steps; the processes app runs them and imports workflows. Two
standard steps need to know about processes: "Link subscription to process" writes the link between them, and
"Unsync" names the process holding a subscription when it refuses. They ask through this module, and the
processes app plugs its implementation in when it is ready (processes/links.py), so the dependency points one
way only: processes → workflows.
"""

from __future__ import annotations

from typing import Protocol

from django.core.exceptions import ImproperlyConfigured


class ProcessLinks(Protocol):
    def link(self, process_id: str, subscription_id: str) -> None:
        """Record that the process works on the subscription (idempotent: a step run again links once)."""

    def other_holders(self, subscription_id: str, process_id: str) -> list[str]:
        """How each unfinished process other than `process_id` that holds the subscription out of sync is
        described to people ("process 9a2e… (modify_node, running)"), newest first."""


_provider: ProcessLinks | None = None


def provide(provider: ProcessLinks) -> None:
    """Called once by the processes app when it is ready."""
    global _provider
    _provider = provider


def process_links() -> ProcessLinks:
    if _provider is None:
        raise ImproperlyConfigured("no app provides process links: the processes app is not installed or not ready")
    return _provider
