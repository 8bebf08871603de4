"""What the process commands share: one-line errors instead of tracebacks, JSON input, process output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from orchestrator_site.errors import OrchestratorError
from processes.models import Process


class ProcessCommand(BaseCommand):
    """A command whose refusals (bad input, wrong status...) print one clear line and exit non-zero."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except OrchestratorError as exc:
            raise CommandError(_with_field_errors(exc), returncode=2 if exc.status_code == 400 else 1) from exc
        except PermissionDenied as exc:
            raise CommandError(f"not allowed: {exc}") from exc

    def add_input_arguments(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--input", help='The input as a JSON object, e.g. \'{"node_name": "rt1"}\'.')
        group.add_argument("--input-file", help="A file holding the input as a JSON object ('-' for stdin).")

    def read_input(self, options: dict[str, Any]) -> dict[str, Any] | None:
        raw, source = options.get("input"), "--input"
        if options.get("input_file"):
            path = options["input_file"]
            source = path
            try:
                raw = self.stdin_text() if path == "-" else Path(path).read_text()
            except OSError as exc:
                raise CommandError(f"cannot read input file {path}: {exc.strerror}") from exc
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        if not isinstance(value, dict):
            raise CommandError(f"{source} must be a JSON object ({{...}}), not a {type(value).__name__}")
        return value

    def stdin_text(self) -> str:
        import sys

        return sys.stdin.read()

    def report(self, process: Process, verb: str) -> None:
        style: Callable[[str], str] = {
            "completed": self.style.SUCCESS, "failed": self.style.ERROR, "aborted": self.style.WARNING,
        }.get(process.status, self.style.NOTICE)
        self.stdout.write(style(f"{verb} process {process.process_id} ({process.workflow.name}): {process.status}"))
        if process.status in ("failed", "waiting") and process.failed_reason:
            self.stdout.write(f"  reason: {process.failed_reason}")
            self.stdout.write(f"  see:    manage.py show_process {process.process_id}")
        if process.status == "suspended":
            self.stdout.write(f"  waiting for input at step {process.last_step!r}: "
                              f"manage.py resume_process {process.process_id} --input '{{...}}'")
        if process.status == "waiting" and process.next_retry_at:
            self.stdout.write(f"  next automatic try at {process.next_retry_at:%Y-%m-%d %H:%M:%S %Z}")


def _with_field_errors(exc: OrchestratorError) -> str:
    # The message already lists the fields at fault; say nothing twice.
    return exc.detail
