"""`manage.py retry_process ID`: run a failed or waiting process again from its last successful step."""

from __future__ import annotations

from typing import Any

from processes.management.commands._base import ProcessCommand
from processes.services import retry_process


class Command(ProcessCommand):
    help = "Retry a failed or waiting process from the state of its last successful step."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("process_id")
        parser.add_argument("--user", default=None, help="Who retries it, as recorded in the log.")

    def handle(self, *args: Any, process_id: str, user: str | None, **options: Any) -> None:
        self.report(retry_process(process_id, by=user), "retried")
