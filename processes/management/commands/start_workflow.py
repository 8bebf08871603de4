"""`manage.py start_workflow NAME [--subscription ID] [--input JSON | --input-file F]`."""

from __future__ import annotations

from typing import Any

from processes.management.commands._base import ProcessCommand
from processes.services import start_process


class Command(ProcessCommand):
    help = "Start a workflow (on a subscription, for modify/terminate/validate workflows) and run it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("workflow", help="The workflow's name (see list_workflows).")
        parser.add_argument("--subscription", help="The subscription's id, for workflows that work on one.")
        parser.add_argument("--user", default=None, help="Who starts it, as recorded in the log (default: system).")
        self.add_input_arguments(parser)

    def handle(self, *args: Any, workflow: str, subscription: str | None, user: str | None, **options: Any) -> None:
        user_input = self.read_input(options)
        process = start_process(workflow, subscription_id=subscription, user_input=user_input, by=user)
        self.report(process, "started")
