"""`manage.py abort_process ID [--reason TEXT]`: end a process for good."""

from __future__ import annotations

from typing import Any

from processes.management.commands._base import ProcessCommand
from processes.services import abort_process


class Command(ProcessCommand):
    help = "Abort a process that has not finished; its subscriptions stay as they are (visibly out of sync)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("process_id")
        parser.add_argument("--reason", default="", help="Why, as recorded in the log.")
        parser.add_argument("--user", default=None, help="Who aborts it, as recorded in the log.")

    def handle(self, *args: Any, process_id: str, reason: str, user: str | None, **options: Any) -> None:
        process = abort_process(process_id, by=user, reason=reason)
        if getattr(process, "abort_pending", False):
            self.stdout.write(self.style.WARNING(process.abort_message))
            return
        self.report(process, "aborted")
