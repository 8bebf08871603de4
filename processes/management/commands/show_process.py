"""`manage.py show_process ID`: the process's timeline, step by step, with errors and what is next."""

from __future__ import annotations

import json
from typing import Any

from orchestrator_site.errors import NotFound
from processes.callbacks import waiting_for
from processes.children import children_of, parent_of
from processes.engine import current_state, get_process
from processes.management.commands._base import ProcessCommand
from processes.models import ProcessStep
from processes.operations import pending_form
from workflows.registry import get_workflow


class Command(ProcessCommand):
    help = "Show a process: its status, each step (status, duration, who, attempt, error), and the steps to come."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("process_id")
        parser.add_argument("--state", action="store_true", help="Also print the current state.")
        parser.add_argument("--tracebacks", action="store_true", help="Also print the failed steps' tracebacks.")

    def handle(self, *args: Any, process_id: str, state: bool, tracebacks: bool, **options: Any) -> None:
        process = get_process(process_id)
        try:
            spec = get_workflow(process.workflow.name)
            steps, gone = spec.steps.names, ""
        except NotFound:
            # Removed from the code since (sync_workflows keeps its row for its processes): still show
            # the log, with the steps the process remembers.
            spec, steps, gone = process.workflow, list(process.workflow_version), " (no longer in the code)"
        subscriptions = [str(s) for s in process.process_subscriptions.values_list("subscription_id", flat=True)]
        self.stdout.write(f"process    {process.process_id}")
        self.stdout.write(f"workflow   {spec.name} ({spec.target}): {spec.description}{gone}")
        self.stdout.write(f"status     {process.status}")
        self.stdout.write(f"started    {process.started_at:%Y-%m-%d %H:%M:%S} by {process.created_by}")
        if subscriptions:
            self.stdout.write(f"subscription {', '.join(subscriptions)}")
        if process.failed_reason:
            self.stdout.write(f"reason     {process.failed_reason}")
        parent = parent_of(process)
        if parent is not None:
            self.stdout.write(f"parent     {parent.process_id}: {parent.text}")
        self.stdout.write("")
        self.stdout.write(f"  #  {'step':<34} {'status':<17} {'started':<19} {'took':>8}  {'by':<12} try")
        # The timeline needs no state: the rows' state columns stay in the database.
        rows = list(ProcessStep.objects.filter(process=process).order_by("id").defer("state", "delta"))
        for number, row in enumerate(rows, 1):
            self.stdout.write(
                f"{number:>3}  {row.name[:34]:<34} {row.status:<17} {row.started_at:%Y-%m-%d %H:%M:%S} "
                f"{row.duration:>7.3f}s  {row.created_by[:12]:<12} {row.attempt}"
            )
            if row.error:
                self.stdout.write(self.style.ERROR(f"     error: {row.error_type + ': ' if row.error_type else ''}"
                                                   f"{row.error}"))
            if tracebacks and row.traceback:
                self.stdout.write(row.traceback)
        # current_step is the next step to run (or the one that failed, waits or is suspended).
        pending = steps[process.current_step:]
        if process.status not in ("completed", "aborted") and pending:
            self.stdout.write("")
            self.stdout.write(f"to run: {' → '.join(pending)}")
        form = None if gone else pending_form(process)
        if form is not None:
            self.stdout.write(f"waiting for input at {form['step']!r}; current values: {json.dumps(form['initial'])}")
            self.stdout.write(f"form (JSON Schema): {json.dumps(form['schema'])}")
        waiting = waiting_for(process)
        if waiting is not None and waiting["kind"] == "callback":
            self.stdout.write(f"awaiting the callback of {waiting['step']!r} since "
                              f"{waiting['since']:%Y-%m-%d %H:%M:%S %Z}, deadline "
                              f"{waiting['deadline']:%Y-%m-%d %H:%M:%S %Z}")
            for message in waiting["progress"]:
                self.stdout.write(f"  progress {message['created_at']:%H:%M:%S}: {message['message']}")
        elif waiting is not None:
            self.stdout.write(f"waiting for timer {waiting['step']!r} until {waiting['until']:%Y-%m-%d %H:%M:%S %Z}")
        family = children_of(process)
        if family is not None and family.steps:
            self.stdout.write("")
            if family.waiting:
                self.stdout.write(family.waiting)
            for step in family.steps:
                self.stdout.write(f"children of step {step.number} ({step.name}): {step.total}: {step.summary}")
                for row in step.rows:
                    reason = f"  {row.failed_reason[:200]}" if row.needs_attention and row.failed_reason else ""
                    self.stdout.write(f"  item {row.item:>4}  {row.process_id}  {row.status:<17} round {row.round}"
                                      f"{reason}")
                if step.more:
                    self.stdout.write(f"  … and {step.more} more: list_processes --parent {process.process_id}")
        if state and rows:
            self.stdout.write("")
            self.stdout.write(json.dumps(current_state(process), indent=2, sort_keys=True))
