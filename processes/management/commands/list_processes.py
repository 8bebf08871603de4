"""`manage.py list_processes [--status S ...] [--workflow W] [--parent ID | --top-level] [--limit N] [--offset N]`."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import CommandError

from orchestrator_site.pagination import count_around_page
from processes.management.commands._base import BIGINT_MAX, ProcessCommand, WholeNumber
from processes.models import Process, ProcessStatus

LIMIT = WholeNumber(1, 10_000)  # more is a dump, not a page: page with --offset
OFFSET = WholeNumber(0, BIGINT_MAX)


class Command(ProcessCommand):
    help = "List processes, newest first, a page at a time."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--status", action="append", default=[], help="Only this status (repeatable).")
        parser.add_argument("--workflow", help="Only this workflow.")
        parser.add_argument("--subscription", help="Only processes on this subscription.")
        parser.add_argument("--parent", help="Only the child processes of this process, in item order.")
        parser.add_argument("--top-level", action="store_true", help="Leave child processes out.")
        parser.add_argument("--limit", type=LIMIT, default=50,
                            help=f"How many to show (default 50, at most {LIMIT.maximum}).")
        parser.add_argument("--offset", type=OFFSET, default=0, help="How many to skip (for the next page).")

    def handle(self, *args: Any, status: list[str], workflow: str | None, subscription: str | None,
               limit: int, offset: int, parent: str | None = None, top_level: bool = False,
               **options: Any) -> None:
        unknown = [s for s in status if s not in ProcessStatus.values]
        if unknown:
            raise CommandError(f"unknown status {', '.join(unknown)}; use one of {', '.join(ProcessStatus.values)}")
        # Checked again for a caller that passes them directly (call_command), skipping argparse's types.
        limit, offset = LIMIT.check("--limit", limit), OFFSET.check("--offset", offset)
        if subscription:
            try:
                subscription = str(uuid.UUID(subscription))
            except ValueError:
                raise CommandError(f"--subscription {subscription!r} is not a subscription id (a UUID)") from None
        if parent and top_level:
            raise CommandError("--parent lists child processes, --top-level leaves them out: give one of them")
        if parent:
            try:
                parent = str(uuid.UUID(parent))
            except ValueError:
                raise CommandError(f"--parent {parent!r} is not a process id (a UUID)") from None
        queryset = Process.objects.select_related("workflow").order_by("-started_at")
        if parent:
            queryset = queryset.filter(parent_id=parent).order_by("parent_step", "child_index", "child_round")
        if top_level:
            queryset = queryset.filter(parent__isnull=True)
        if status:
            queryset = queryset.filter(status__in=status)
        if workflow:
            queryset = queryset.filter(workflow__name=workflow)
        if subscription:
            queryset = queryset.filter(process_subscriptions__subscription_id=subscription)
        # One row more than shown says whether there is a next page; the count stops at LIST_COUNT_LIMIT
        # (orchestrator_site.pagination, as the API's and the admin's lists).
        page = list(queryset[offset:offset + limit + 1]) if offset + limit < BIGINT_MAX else []
        more = len(page) > limit
        page = page[:limit]
        total, exact = count_around_page(queryset, offset, len(page), more)
        for process in page:
            reason = f"  {process.failed_reason[:80]}" if process.failed_reason else ""
            self.stdout.write(
                f"{process.process_id}  {process.status:<17} {process.workflow.name:<20} "
                f"{process.started_at:%Y-%m-%d %H:%M:%S}  {process.created_by:<12} {process.last_step}{reason}"
            )
        of = f"{total}" if exact else f"at least {total}"
        next_page = f"; next page: --offset {offset + limit}" if more else ""
        self.stdout.write(f"{len(page)} of {of} processes{next_page}.")
