"""What the API token commands share: service errors as CommandError (a message and exit status 1, no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.core.management.base import CommandError

from orchestrator_site.errors import OrchestratorError
from orchestrator_site.humanize import exact_time


@contextmanager
def command_errors() -> Iterator[None]:
    """Run the block; an error of the service (unknown user, unknown prefix, bad value) ends the command."""
    try:
        yield
    except OrchestratorError as exc:
        raise CommandError(str(exc)) from exc


def expiry_text(expiry: datetime | None) -> str:
    """ "2027-02-28 10:00:00 UTC", or "never"."""
    return "never" if expiry is None else exact_time(expiry)
