"""The Django admin for processes: the list, the read-only log, and the actions (through processes.services)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from orchestrator_site.errors import InvalidInput, OrchestratorError
from orchestrator_site.pagination import CappedPaginator
from processes import operations, services
from processes.admin_actions import ACTIONS, BADGE_COLOURS, BADGE_DEFAULT, NEEDS_ATTENTION, badge
from processes.admin_bulk_retry import BulkRetryPages
from processes.admin_callbacks import CallbackPages
from processes.admin_children import ChildrenPages
from processes.admin_columns import ProcessColumns
from processes.admin_detail import ProcessDetailPages
from processes.admin_filters import CreatedByFilter, HierarchyFilter, ParentFilter
from processes.admin_forms import AbortForm, SkipForm, form_for, input_from, put_errors_on
from processes.admin_history import record, with_reason
from processes.admin_live import LivePages
from processes.admin_notes import NotePages
from processes.admin_times import InputTimes, ProcessTimes, StepTimes
from processes.families import family_refusal
from processes.models import (
    RETRYABLE,
    InputState,
    Process,
    ProcessStatus,
    ProcessStep,
    ProcessSubscription,
)
from processes.search import search_processes
from processes.status_counts import status_counts as count_statuses
from subscriptions.admin import ReadOnlyAdminMixin

P = ProcessStatus
RUN_PERMISSION = "processes.run_process"

# --- The process list ----------------------------------------------------------------------------
@admin.register(Process)
class ProcessAdmin(ProcessColumns, ProcessTimes, LivePages, BulkRetryPages, NotePages, CallbackPages,
                   ChildrenPages, ProcessDetailPages, admin.ModelAdmin):
    # What fits a 1366 px screen beside the filters (processes.admin_columns).
    list_display = [
        "process_and_status", "workflow_name", "subscription_links", "last_step_and_reason", "started", "duration",
    ]
    list_display_links = None  # process_and_status links the id itself, not the badge under it
    # Each filter's choices come from the code (status, task, dates), the small workflow table, or an
    # index (CreatedByFilter): none reads the processes, which a SELECT DISTINCT over them would.
    # Children are listed by default: a failed child is the process to retry, and the counts at the top count
    # them too. HierarchyFilter hides them; ParentFilter (?parent=) lists one process's children.
    list_filter = [
        "status", "workflow", "workflow__target", "is_task", HierarchyFilter, ParentFilter, CreatedByFilter,
        ("started_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["workflow"]
    list_per_page = 50
    # No date hierarchy (it reads the dates of every row on every page), no count of the whole table
    # beside a filtered one, no facet counts, and a count of the filtered list that stops at
    # LIST_COUNT_LIMIT (CappedPaginator): on a large table each would cost more than the page itself.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    # Shows the search box; the search itself is processes.search (get_search_results).
    search_fields = ["workflow__name", "process_subscriptions__subscription__customer_id"]
    search_help_text = (
        "Words (each must match) of the workflow name or of a subscription's description, customer id, resource "
        "values or product; or a process or subscription id, whole or its first 8+ characters."
    )
    actions = ["retry_selected"]
    change_list_template = "admin/processes/process/change_list.html"
    change_form_template = "admin/processes/process/change_form.html"
    fieldsets = [
        (None, {"fields": ["process_id", "workflow", "status_badge", "failed_reason"]}),  # the note: its own box
        ("Progress", {"fields": [
            "progress", "last_step", "next_retry_exact", "workflow_version",
        ]}),
        ("Who and when", {"fields": [
            "created_by", "acting_user", "started_exact", "last_modified_exact", "total_duration", "is_task",
        ]}),
    ]
    readonly_fields = [
        "status_badge", "progress", "next_retry_exact", "started_exact", "last_modified_exact", "total_duration",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Process]:
        # The subscriptions column reads the link rows with their subscriptions: one query per page, whatever
        # its size.
        links = ProcessSubscription.objects.select_related("subscription")
        return super().get_queryset(request).prefetch_related(Prefetch("process_subscriptions", queryset=links))

    @admin.display(description="id", ordering="process_id")
    def short_id(self, obj: Process) -> str:
        return obj.short_id

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Process) -> SafeString:
        return badge(obj.status, obj.get_status_display())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Process], search_term: str
    ) -> tuple[QuerySet[Process], bool]:
        """The one process search (processes.search), as the API's `?search=`; it lists each row once."""
        return search_processes(queryset, search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Kept by the database as processes are written (processes.status_counts): no read of the processes.
        counts = count_statuses()
        selected = request.GET.get("status__exact")
        status_counts = [
            {
                "status": value, "label": label, "count": counts.get(value, 0),
                "url": f"?status__exact={value}", "selected": value == selected,
                "highlight": value in NEEDS_ATTENTION and counts.get(value, 0) > 0,
                "colour": BADGE_COLOURS.get(value, BADGE_DEFAULT),
            }
            for value, label in P.choices
        ]
        context = {"status_counts": status_counts, "total_count": sum(counts.values()), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    # --- permissions: read-only; actions need run_process --------------------------------------------
    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may run processes must be able to see them.
        return super().has_view_permission(request, obj) or self.has_run_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """No: processes are started from a subscription's page, the API or manage.py, through a workflow."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No: a process and its log are an audit record; they change only through the engine's actions."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Only a finished task's process, one at a time (a workflow's process is an audit record)."""
        if obj is None or not obj.is_task or obj.status in services.IN_FLIGHT or family_refusal(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # The log and inputs go with the task (delete_task deletes them); their admins being read-only
        # must not refuse that.
        goes_along = {str(model._meta.verbose_name) for model in (ProcessStep, InputState)}
        return deleted, counts, perms_needed - goes_along, protected

    def delete_model(self, request: HttpRequest, obj: Process) -> None:
        services.delete_task(obj.pk, by=request.user)

    def available_actions(self, request: HttpRequest, process: Process, *, at_done: bool = False) -> list[dict]:
        """The buttons to show: the actions the process's status allows, to a user who may run processes."""
        if not self.has_run_permission(request):
            return []
        out = []
        for spec in ACTIONS.values():
            if process.status not in spec.statuses or (spec.name == "skip" and at_done):
                continue
            out.append({"name": spec.name, "label": spec.label,
                        "url": reverse(f"admin:processes_process_{spec.name}", args=[process.pk])})
        return out

    # --- actions ---------------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        views: dict[str, Callable[..., HttpResponse]] = {
            "retry": self.retry_view, "resume": self.resume_view, "abort": self.abort_view, "skip": self.skip_view,
        }
        custom = [
            path(f"<uuid:object_id>/{name}/", self.admin_site.admin_view(view), name=f"processes_process_{name}")
            for name, view in views.items()
        ]
        custom.append(path("<uuid:object_id>/steps/<int:number>/", self.admin_site.admin_view(self.step_state_view),
                           name="processes_process_step_state"))  # ProcessDetailPages
        # Before the admin's catch-all `<path:object_id>/`.
        return custom + self.callback_urls() + self.note_urls() + self.live_urls() + super().get_urls()

    def _action_process(self, request: HttpRequest, object_id: uuid.UUID, action: str) -> Process | HttpResponse:
        """The process to act on, or the response refusing it: 403 without the permission, a message when its
        status does not allow the action (only on GET: a POST always reaches the service, which says why)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        process = self.get_object(request, str(object_id))
        if process is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(object_id))
        spec = ACTIONS[action]
        if request.method != "POST" and process.status not in spec.statuses:
            messages.error(request, f"Cannot {spec.verb or spec.label.lower()} process {process.process_id}: it is "
                                    f"{process.get_status_display()}.")
            return self._to_detail(process)
        return process

    def _to_detail(self, process: Process | uuid.UUID) -> HttpResponseRedirect:
        pk = process.pk if isinstance(process, Process) else process
        return HttpResponseRedirect(reverse("admin:processes_process_change", args=[pk]))

    def _refused(self, request: HttpRequest, process: Process, exc: Exception) -> HttpResponseRedirect:
        messages.error(request, str(exc) or "Refused.")
        return self._to_detail(process)

    def _done(self, request: HttpRequest, process: Process, what: str, history: str) -> HttpResponseRedirect:
        """After an action succeeded: its line in the process's History, and a message saying where it stands."""
        record(self, request, process, history)
        text = f"{what} process {process.process_id}: it is now {process.get_status_display()}."
        if process.status in RETRYABLE:
            # It stopped again: say why right away, the detail page shows the rest.
            messages.warning(request, f"{text} {process.failed_reason}")
        else:
            messages.success(request, text)
        return self._to_detail(process)

    def _render_action(self, request: HttpRequest, process: Process, action: str,
                       form: forms.Form | None, extra: dict[str, Any] | None = None) -> TemplateResponse:
        spec = ACTIONS[action]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "original": process, "process": process, "action": spec,
            "title": f"{spec.label}: {process.workflow.name} {process.short_id}",
            "form": form, "has_view_permission": True,
            "detail_url": reverse("admin:processes_process_change", args=[process.pk]),
            "media": self.media + (form.media if form is not None else forms.Media()),
            "process_status_display": process.get_status_display(),
            **(extra or {}),
        }
        return TemplateResponse(request, "admin/processes/process/action.html", context)

    def retry_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        process = self._action_process(request, object_id, "retry")
        if not isinstance(process, Process):
            return process
        if request.method == "POST":
            try:
                process = services.retry_process(process.pk, by=request.user)
            except (OrchestratorError, PermissionDenied) as exc:
                return self._refused(request, process, exc)
            return self._done(request, process, "Retried", "Retried")
        return self._render_action(request, process, "retry", None)

    def resume_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        process = self._action_process(request, object_id, "resume")
        if not isinstance(process, Process):
            return process
        pending = operations.pending_form(process)
        if pending is None:
            return self._refused(request, process, OrchestratorError(
                f"Cannot resume process {process.process_id}: it is not waiting for input "
                f"(it is {process.get_status_display()})."))
        place = operations.awaited_input(process)
        serializer = place.step.form if place is not None else None
        form = form_for(serializer, data=request.POST if request.method == "POST" else None,
                        initial=pending["initial"])
        extra = {"input_step": pending["step"]}
        if request.method == "POST" and form.is_valid():
            try:
                process = services.resume_process(process.pk, input_from(form), by=request.user)
            except InvalidInput as exc:
                put_errors_on(form, exc)
            except (OrchestratorError, PermissionDenied) as exc:
                return self._refused(request, process, exc)
            else:
                return self._done(request, process, "Resumed", f"Resumed at step {pending['step']!r}")
        return self._render_action(request, process, "resume", form, extra)

    def abort_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        process = self._action_process(request, object_id, "abort")
        if not isinstance(process, Process):
            return process
        form = AbortForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                process = services.abort_process(process.pk, by=request.user, reason=form.cleaned_data["reason"])
            except (OrchestratorError, PermissionDenied) as exc:
                return self._refused(request, process, exc)
            reason = form.cleaned_data["reason"]
            if getattr(process, "abort_pending", False):
                record(self, request, process, with_reason("Abort requested (at the end of the running step)", reason))
                messages.warning(request, f"{process.abort_message}.")
            else:
                record(self, request, process, with_reason("Aborted", reason))
                messages.success(request, f"Aborted process {process.process_id}: {process.failed_reason}.")
            return self._to_detail(process)
        return self._render_action(request, process, "abort", form, self.abort_context(process))

    def skip_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        process = self._action_process(request, object_id, "skip")
        if not isinstance(process, Process):
            return process
        form = SkipForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            skipped = process.last_step
            try:
                process = services.skip_step(process.pk, by=request.user, reason=form.cleaned_data["reason"])
            except InvalidInput as exc:
                for field, errors in exc.errors.items():
                    form.add_error(field if field in form.fields else None, errors)
            except (OrchestratorError, PermissionDenied) as exc:
                return self._refused(request, process, exc)
            else:
                return self._done(request, process, f"Skipped step {skipped!r} of",
                                  with_reason(f"Skipped step {skipped!r}", form.cleaned_data["reason"]))
        return self._render_action(request, process, "skip", form, {"failed_step": process.last_step})

    @admin.action(description="Retry selected processes", permissions=["run"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Process]) -> HttpResponse | None:
        """A confirmation page first (processes.admin_bulk_retry); each retried through the detail page's service."""
        return self.bulk_retry(request, queryset)


# --- The log and the inputs, read-only ---------------------------------------------------------------
class ProcessLinkMixin:
    @admin.display(description="process", ordering="process__started_at")
    def process_link(self, obj: ProcessStep | InputState) -> SafeString:
        return format_html('<a href="{}">{} {}</a>', reverse("admin:processes_process_change", args=[obj.process_id]),
                           obj.process.workflow.name, str(obj.process_id)[:8] + "…")


@admin.register(ProcessStep)
class ProcessStepAdmin(StepTimes, ProcessLinkMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every step of every process: written by the engine only."""

    list_display = ["name", "status_badge", "process_link", "attempt", "created_by", "started", "duration"]
    list_filter = ["status", ("started_at", admin.DateFieldListFilter)]
    list_select_related = ["process__workflow"]
    search_fields = ["name", "error", "created_by", "process__workflow__name"]
    list_per_page = 50

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ProcessStep) -> SafeString:
        return badge(obj.status, obj.get_status_display())


@admin.register(InputState)
class InputStateAdmin(InputTimes, ProcessLinkMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every form a process received: written by the engine only."""

    list_display = ["input_type", "step_name", "process_link", "created_by", "received"]
    list_filter = ["input_type"]
    list_select_related = ["process__workflow"]
    search_fields = ["step_name", "created_by", "process__workflow__name"]
    list_per_page = 50
