"""Start predicates (`@workflow(..., run_predicate=...)`): conditions checked whenever a workflow starts.

A predicate is called with a start context (its `spec`, its `subscription` or None for a task, and
`unfinished_processes()`) and returns None or True to let the start go on, or a message (or False) to
refuse it: the start answers 412 with that message and creates no process. Predicates run inside the
start's transaction, after the subscription (and, for a workflow with predicates, the workflow's row) is
locked, so two starts at the same moment cannot both pass a predicate that only one of them should.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class StartContext(Protocol):
    """What a predicate is given (the processes app provides it: workflows do not reach into processes)."""

    spec: Any
    subscription: Any

    def unfinished_processes(self) -> list[tuple[Any, str]]: ...


def no_unfinished_instance(context: StartContext) -> str | None:
    """Refuse a second instance of the workflow while one is unfinished (on the same subscription, if any)."""
    unfinished = context.unfinished_processes()
    if not unfinished:
        return None
    process_id, status = unfinished[0]
    where = f" on subscription {context.subscription.subscription_id}" if context.subscription is not None else ""
    return (
        f"{context.spec.name} is already running{where}: process {process_id} is {status}; "
        f"one instance at a time (wait for it to finish, or abort it)"
    )
