"""The admin's History of processes and subscriptions: a Django LogEntry for each action staff take there."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin
from django.db import DatabaseError, models
from django.http import HttpRequest
from django.utils.text import Truncator

logger = logging.getLogger(__name__)

# How much of a note a History line quotes: enough to recognise it (the process page shows all of it).
NOTE_QUOTED = 100


def record(model_admin: admin.ModelAdmin, request: HttpRequest, obj: models.Model, message: str) -> None:
    """Write the LogEntry of an action that succeeded (the object's History, "Recent actions" on the index).

    Written after the action committed: failing to write it is logged, and never shown as the action failing.
    """
    try:
        model_admin.log_change(request, obj, message)
    except DatabaseError:
        logger.exception("%s %s: could not write the admin history line %r", obj._meta.label, obj.pk, message)


def with_reason(what: str, reason: Any) -> str:
    """An action with its reason, on one line: "Aborted: customer cancelled"; "Aborted" without one."""
    reason = " ".join(str(reason or "").split())
    return f"{what}: {reason}" if reason else what


def note_message(note: str) -> str:
    """The History line of a note change: the new note quoted (cut), or that it was cleared."""
    if not note:
        return "Note cleared"
    return f"Note changed: \"{Truncator(' '.join(note.split())).chars(NOTE_QUOTED)}\""
