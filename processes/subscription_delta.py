"""The subscription delta of a process: each field its modify or terminate changed, old and new value."""

from __future__ import annotations

import logging
from typing import Any

from processes.models import FINISHED, Process
from subscriptions.models import Subscription
from subscriptions.snapshot import delta, snapshot

logger = logging.getLogger(__name__)


def subscription_delta(process: Process, state: dict[str, Any]) -> dict[str, Any] | None:
    """Before (kept by the Unsync step) against after (kept by Resync), or against the subscription as it
    is now while the process has not given it back: what a failed modify had changed so far.

    None for a process without a before-image (a create, a task, a validation, or one from before
    before-images were kept).
    """
    before = state.get("subscription_before")
    subscription_id = state.get("subscription_id")
    if not isinstance(before, dict) or not subscription_id:
        return None
    after = state.get("subscription_after")
    if isinstance(after, dict):
        as_of = "when the process gave the subscription back"
        complete = True
    else:
        try:
            after = snapshot(str(subscription_id))
        except (Subscription.DoesNotExist, ValueError):
            return None
        complete = False
        as_of = ("now: the process was aborted before it gave the subscription back"
                 if process.status in FINISHED else "now: what the process has changed so far")
    return {"subscription_id": str(subscription_id), "complete": complete, "as_of": as_of,
            "changes": delta(before, after)}
