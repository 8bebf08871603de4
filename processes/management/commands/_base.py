"""What the process commands share: one-line errors instead of tracebacks, bounded numbers, JSON input, output."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator_site.errors import OrchestratorError
from orchestrator_site.parsers import max_json_depth, too_deep_message
from processes.models import Process

# The largest LIMIT or OFFSET the database takes (PostgreSQL: a bigint); beyond it a query fails.
BIGINT_MAX = 2**63 - 1


class WholeNumber:
    """An argparse `type=`: a whole number from `minimum` to `maximum`, or one clear error naming the range.

    `1e20`, `1.5`, `abc` and numbers beyond the range are refused when the arguments are parsed; `check()`
    applies the same rule to a value given directly (call_command(..., limit=...) skips argparse's types).
    """

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum

    def __call__(self, raw: str) -> int:
        value = self._parse(raw)
        if value is None:
            raise argparse.ArgumentTypeError(self.describe(raw))
        return value

    def check(self, option: str, value: Any) -> int:
        parsed = self._parse(value)
        if parsed is None:
            raise CommandError(f"{option} {self.describe(value)}")
        return parsed

    def describe(self, raw: Any) -> str:
        return f"must be a whole number from {self.minimum} to {self.maximum}, not {raw!r}"

    def _parse(self, raw: Any) -> int | None:
        if isinstance(raw, bool):
            return None
        try:
            # int() refuses "1e20" and "1.5" (and, by Python's own limit, numbers of over 4300 digits).
            value = raw if isinstance(raw, int) else int(str(raw).strip())
        except ValueError:
            return None
        return value if self.minimum <= value <= self.maximum else None


class Seconds:
    """An argparse `type=`: a finite number of seconds above 0 and at most `maximum` (no nan, inf or negatives)."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum

    def __call__(self, raw: str) -> float:
        value = self._parse(raw)
        if value is None:
            raise argparse.ArgumentTypeError(self.describe(raw))
        return value

    def check(self, option: str, value: Any) -> float:
        parsed = self._parse(value)
        if parsed is None:
            raise CommandError(f"{option} {self.describe(value)}")
        return parsed

    def describe(self, raw: Any) -> str:
        return f"must be a number of seconds above 0 and at most {self.maximum:g}, not {raw!r}"

    def _parse(self, raw: Any) -> float | None:
        if isinstance(raw, bool):
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            return None
        return value if math.isfinite(value) and 0 < value <= self.maximum else None


class OneLineErrorParser(CommandParser):
    """Django's command parser, with a wrong argument one line on stderr instead of a screenful of usage."""

    def error(self, message: str) -> Any:
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
        raise CommandError(f"Error: {message}")


class OneLineCommand(BaseCommand):
    """A command whose wrong arguments print one clear line and exit non-zero (2), as argparse does, minus the usage."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # BaseCommand builds a CommandParser itself; only its error() differs, so change the class in place.
        parser.__class__ = OneLineErrorParser
        return parser


class ProcessCommand(OneLineCommand):
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
        except RecursionError:
            # Python's decoder recurses once per level: thousands of brackets exhaust its stack.
            # (Shallower but too deep input is the service's to refuse, naming the fields.)
            raise CommandError(too_deep_message(source, max_json_depth())) from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise CommandError(f"{source} is not valid JSON: {exc}") from exc
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
