"""`manage.py resume_process ID --input JSON`: give a suspended process the input it waits for."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from processes.management.commands._base import ProcessCommand
from processes.services import resume_process


class Command(ProcessCommand):
    help = "Resume a suspended process with the input its input step asks for (validated; bad input changes nothing)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("process_id")
        parser.add_argument("--user", default=None, help="Who gives the input, as recorded in the log.")
        self.add_input_arguments(parser)

    def handle(self, *args: Any, process_id: str, user: str | None, **options: Any) -> None:
        user_input = self.read_input(options)
        if user_input is None:
            raise CommandError("give the input with --input '{...}' or --input-file FILE (show_process shows the form)")
        self.report(resume_process(process_id, user_input, by=user), "resumed")
