"""The process list's bulk retry: a confirmation page listing what will be retried and what will not (and why),
then each retried through processes.services.retry_process, with one message saying how it went."""

from __future__ import annotations

import logging
import uuid
from collections import Counter

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from orchestrator_site.errors import OrchestratorError
from processes import services
from processes.admin_history import record
from processes.models import RETRYABLE, Process, ProcessStatus

logger = logging.getLogger(__name__)

# The most processes one bulk retry takes: each is a transaction and a hand-over (run to its end right here
# with the inline executor), and the confirmation page lists each. More is narrowed with a filter first.
BULK_RETRY_MAX = 200
# The field of the confirmation form naming the selected processes it does not retry (for the summary).
NOT_RETRIED_FIELD = "_not_retried"


def not_retryable_reason(process: Process) -> str:
    allowed = ", ".join(str(ProcessStatus(status).label) for status in RETRYABLE)
    text = f"it is {process.get_status_display()}; only {allowed} processes can be retried"
    if process.status == ProcessStatus.AWAITING_CHILDREN:
        # What does move it on: its page names the children that stop it.
        text += " (retry or skip its failed children instead: it goes on when all of them have ended)"
    return text


def describe(process: Process) -> str:
    return f"{process.short_id} ({process.workflow.name})"


class BulkRetryPages:
    """For ProcessAdmin: the `retry_selected` action's confirmation page and what its Confirm does."""

    def bulk_retry(self, request: HttpRequest, queryset: QuerySet[Process]) -> HttpResponse | None:
        if not self.has_run_permission(request):
            raise PermissionDenied
        if request.POST.get("post") == "yes":
            self._retry_confirmed(request)
            return None  # back to the list, as it was filtered
        chosen = list(queryset.select_related("workflow").order_by("-started_at")[:BULK_RETRY_MAX + 1])
        if len(chosen) > BULK_RETRY_MAX:
            self.message_user(request, f"Select at most {BULK_RETRY_MAX} processes to retry at once; narrow the "
                                       f"list with a filter (failed, a workflow) first. Nothing was retried.",
                              messages.WARNING)
            return None
        retry = [p for p in chosen if p.status in RETRYABLE]
        skip = [{"process": p, "reason": not_retryable_reason(p), "url": self._detail_url(p)}
                for p in chosen if p.status not in RETRYABLE]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": "Retry the selected processes?",
            "to_retry": [{"process": p, "url": self._detail_url(p)} for p in retry],
            "not_retried": skip,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "not_retried_field": NOT_RETRIED_FIELD,
            "cancel_url": request.get_full_path(), "media": self.media,
        }
        return TemplateResponse(request, "admin/processes/process/retry_selected.html", context)

    def _detail_url(self, process: Process) -> str:
        return reverse("admin:processes_process_change", args=[process.pk])

    def _retry_confirmed(self, request: HttpRequest) -> None:
        """Retry those the page listed (its form names only them); report each refusal and each one not retried.

        By the ids the page sent, not the list's filters: one that no longer matches them (someone retried it
        meanwhile) is reported, not silently left out.
        """
        retried: list[Process] = []
        failed: list[str] = []
        ids = _valid_ids(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))[:BULK_RETRY_MAX]
        found = Process.objects.select_related("workflow").in_bulk(ids)
        failed += [f"{value[:8]}…: it no longer exists" for value in ids if uuid.UUID(value) not in found]
        for process in sorted(found.values(), key=lambda p: p.started_at, reverse=True):
            try:
                done = services.retry_process(process.pk, by=request.user)
            except (OrchestratorError, PermissionDenied) as exc:
                failed.append(f"{describe(process)}: {exc or 'you may not retry it'}")
            else:
                retried.append(done)
                record(self, request, done, "Retried (bulk retry from the list)")
        not_retried_ids = request.POST.getlist(NOT_RETRIED_FIELD)
        not_retried = [
            f"{describe(p)}: {not_retryable_reason(p)}" if p.status not in RETRYABLE else
            # It became retryable after the page was shown: it was not among those you confirmed.
            f"{describe(p)}: it was not retryable when the list was shown (it is {p.get_status_display()} now: "
            f"retry it again)"
            for p in Process.objects.filter(pk__in=_valid_ids(not_retried_ids)).select_related("workflow")
        ]
        self.message_user(request, summary(retried, failed, not_retried),
                          messages.WARNING if failed or not_retried else messages.SUCCESS)


def _valid_ids(values: list[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(uuid.UUID(value)))
        except ValueError:
            continue  # a tampered form: the ids it made up are nobody's
    return out


def summary(retried: list[Process], failed: list[str], not_retried: list[str]) -> str:
    """One message for the whole bulk retry: how many were retried (and how they stand now), which could not
    be (and why), and which of the selected were not retryable."""
    now = Counter(p.get_status_display() for p in retried)
    text = f"Retried {len(retried)} process{'es' if len(retried) != 1 else ''}"
    if retried:
        text += " (now " + ", ".join(f"{count} {status}" for status, count in sorted(now.items())) + ")"
    text += "."
    if failed:
        text += f" Could not retry {len(failed)}: " + "; ".join(failed) + "."
    if not_retried:
        text += f" Not retried {len(not_retried)}: " + "; ".join(not_retried) + "."
    return text
