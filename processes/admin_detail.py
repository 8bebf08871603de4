"""The admin's process page: a page of the timeline with what each step changed, and one step's whole state."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from orchestrator_site import humanize
from orchestrator_site.errors import OrchestratorError
from processes import engine, steppages
from processes.models import FINISHED, InputState, Process, ProcessStep, StepStatus
from processes.subscription_delta import subscription_delta
from workflows.dsl import StepKind
from workflows.registry import get_workflow

logger = logging.getLogger(__name__)


# What the timeline says under a step that changed nothing, for steps that wait (the default otherwise).
NO_CHANGE = {
    StepStatus.WAITING: "a timer: the process waited here, holding no worker",
    StepStatus.AWAITING_CALLBACK: "the external system was asked; the process awaited its callback, holding no worker",
    StepStatus.CALLBACK: "the callback's answer was taken, for the step to check",
    StepStatus.AWAITING_CHILDREN: "child processes were started; the process awaited them, holding no worker",
}


def is_failure(row: ProcessStep) -> bool:
    """A failed step, or one waiting to be tried again after an error (a timer's wait is no failure)."""
    return row.status == StepStatus.FAILED or (row.status == StepStatus.WAITING and bool(row.error))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def state_diff(before: dict[str, Any], delta: dict[str, Any]) -> list[dict[str, str]]:
    """The keys a step added, changed or removed (its `delta`), each with its value before and after, by key.

    Only the keys the step touched are looked at: the cost is that of the step's changes, not of the state.
    """
    rows = []
    for key, value in (delta.get("added") or {}).items():
        rows.append({"key": key, "kind": "added", "before": "", "after": _json(value)})
    for key, value in (delta.get("changed") or {}).items():
        rows.append({"key": key, "kind": "changed", "before": _json(before.get(key)), "after": _json(value)})
    for key in delta.get("removed") or ():
        rows.append({"key": key, "kind": "removed", "before": _json(before.get(key)), "after": ""})
    return sorted(rows, key=lambda row: row["key"])


class ProcessDetailPages:
    """The process page's context and the step page, for ProcessAdmin (which gives the actions and redirects)."""

    # --- the detail page -----------------------------------------------------------------------------
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        process = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if process is not None:
            context.update(self.detail_context(request, process))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        """A page of the timeline with each step's diff (the newest page unless ?steps_from= says which), the
        steps to come, subscriptions, inputs, actions. The whole state after a step is a link away."""
        try:
            offset: int | None = max(0, int(request.GET["steps_from"]))
        except (KeyError, ValueError):
            offset = None
        page = steppages.step_page(process, offset=offset)
        timeline = [
            # A failed row changed nothing: its diff is empty, as its work rolled back.
            {"number": number, "row": shown.row, "duration": humanize.duration(shown.row.duration),
             "diff": state_diff(shown.before, shown.delta), "failure": is_failure(shown.row),
             "no_change": NO_CHANGE.get(shown.row.status, ""),
             "state_url": reverse("admin:processes_process_step_state", args=[process.pk, number])}
            for number, shown in page.items
        ]
        change_url = reverse("admin:processes_process_change", args=[process.pk])
        steps_nav = {
            "first": page.first, "last": page.last, "total": page.total,
            "earlier_url": (f"{change_url}?steps_from={page.earlier_offset}#process-timeline"
                            if page.earlier_offset is not None else None),
            "later_url": (f"{change_url}?steps_from={page.later_offset}#process-timeline"
                          if page.later_offset is not None else None),
            "newest_url": f"{change_url}#process-timeline" if page.later_offset is not None else None,
        }
        newest = page.later_offset is None and page.items
        current = page.items[-1][1].after if newest else engine.current_state(process)
        try:
            spec = get_workflow(process.workflow.name)
            names, kinds = spec.version, [step.kind for step in spec.steps]
        except OrchestratorError:
            # The workflow is gone from the code: the names it started with still say where it stood.
            names, kinds = list(process.workflow_version), []
        pending = [] if process.status in FINISHED else [
            {"number": position + 1, "name": name, "current": position == process.current_step}
            for position, name in enumerate(names) if position >= process.current_step
        ]
        links = process.process_subscriptions.select_related("subscription__product").order_by("created_at")
        subscriptions = [
            {"url": reverse("admin:subscriptions_subscription_change", args=[link.subscription_id]),
             "subscription": link.subscription}
            for link in links
        ]
        inputs = [
            {"row": row, "json": json.dumps(row.input, indent=2, sort_keys=True, ensure_ascii=False, default=str)}
            for row in InputState.objects.filter(process=process).order_by("input_time", "id")
        ]
        at_done = bool(kinds) and process.current_step < len(kinds) and kinds[process.current_step] == StepKind.DONE
        return {
            "timeline": timeline, "steps_nav": steps_nav, "pending_steps": pending,
            "process_subscriptions": subscriptions,
            "process_inputs": inputs, "process_actions": self.available_actions(request, process, at_done=at_done),
            "process_status_display": process.get_status_display(),
            "subscription_delta": subscription_delta(process, current),
        }

    def step_state_view(self, request: HttpRequest, object_id: uuid.UUID, number: int) -> HttpResponse:
        """One step of the log with the whole state after it (the timeline shows only what each step changed)."""
        process = self.get_object(request, str(object_id))
        if process is None or not self.has_view_permission(request, process):
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(object_id))
        page = steppages.step_page(process, offset=number - 1, limit=1) if number >= 1 else None
        if page is None or not page.items:
            messages.error(request, f"Process {process.process_id} has no step {number}.")
            return self._to_detail(process)
        shown = page.items[0][1]
        change_url = reverse("admin:processes_process_change", args=[process.pk])
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": process,
            "title": f"Step {number} of {process.workflow.name}: {shown.row.name}",
            "number": number, "row": shown.row, "diff": state_diff(shown.before, shown.delta),
            "failure": is_failure(shown.row),
            "state_json": json.dumps(shown.after, indent=2, sort_keys=True, ensure_ascii=False, default=str),
            "process_url": change_url,
            "timeline_url": f"{change_url}?steps_from={steppages.newest_offset(number, steppages.page_size())}"
                            f"#step-{number}",
            "previous_url": (reverse("admin:processes_process_step_state", args=[process.pk, number - 1])
                             if number > 1 else None),
            "next_url": (reverse("admin:processes_process_step_state", args=[process.pk, number + 1])
                         if number < page.total else None),
        }
        return TemplateResponse(request, "admin/processes/process/step_state.html", context)

