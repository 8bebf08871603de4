"""The subscription's admin page, with what processes add to it: its processes, the workflows it can start
now (and why others cannot), starting one through its initial form, "set in sync" for a stuck one, its last
validation, and, while it is out of sync, since when and which process holds it.

`subscriptions` knows nothing of processes (DESIGN.md, "Apps and what each owns"), so this module replaces
its SubscriptionAdmin on the admin site with a subclass; ProcessesConfig.ready() imports it.
Every action calls the same service as the API and the command line (processes.services), and is a line of the
subscription's History (processes.admin_history).
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse

from orchestrator_site.errors import InvalidInput, NotFound, OrchestratorError
from processes.admin_engine import pause_of
from processes.admin_forms import form_for, input_from, put_errors_on
from processes.admin_history import record, with_reason
from processes.models import ProcessSubscription
from processes.services import holding_processes, holds, set_in_sync, start_process, workflows_for
from subscriptions.admin import SubscriptionAdmin
from subscriptions.models import Subscription
from subscriptions.services import get_subscription
from workflows.models import Target
from workflows.registry import WorkflowSpec

RUN_PROCESS = "processes.run_process"
# The subscription page lists this many of its newest processes.
PROCESSES_SHOWN = 50


def process_admin_url(process_id: uuid.UUID) -> str:
    try:
        return reverse("admin:processes_process_change", args=[process_id])
    except NoReverseMatch:
        return f"{reverse('admin:index')}processes/process/{process_id}/change/"


def initial_input(spec: WorkflowSpec, subscription: Subscription) -> dict[str, Any]:
    """What a workflow's start form shows first: its form's `initial_for(subscription)`, if it has one.

    A form that says how the subscription should be afterwards (modify_subscription_details) starts from
    how it is now, so staff change what they mean to and leave the rest as it was.
    """
    initial_for = getattr(spec.initial_input_form, "initial_for", None)
    return initial_for(subscription) if callable(initial_for) else {}


class SetInSyncForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        max_length=2000,
        help_text="Why the subscription is in sync again (what you checked or fixed). Kept in its history.",
    )


# --- the admin -------------------------------------------------------------------------------------
class SubscriptionProcessesAdmin(SubscriptionAdmin):
    """SubscriptionAdmin plus its processes, the workflows it may start, and "set in sync"."""

    change_form_template = "admin/subscriptions/subscription/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        # Before the default ones: "<path:object_id>/" would swallow them.
        return [
            path("<path:object_id>/start/<str:workflow_name>/", wrap(self.start_workflow_view),
                 name="{}_{}_start".format(*info)),
            path("<path:object_id>/set-in-sync/", wrap(self.set_in_sync_view),
                 name="{}_{}_set_in_sync".format(*info)),
            *super().get_urls(),
        ]

    @staticmethod
    def can_run(request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PROCESS)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = dict(extra_context or {})
        subscription = self.get_object(request, admin.utils.unquote(object_id))
        if subscription is not None:
            context.update(self.processes_context(request, subscription))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def processes_context(self, request: HttpRequest, subscription: Subscription) -> dict[str, Any]:
        links = (
            ProcessSubscription.objects.filter(subscription=subscription)
            .select_related("process__workflow")
            .order_by("-process__started_at")
        )
        total = links.count()
        processes = [
            {"process": link.process, "url": process_admin_url(link.process_id)}
            for link in links[:PROCESSES_SHOWN]
        ]
        can_run = self.can_run(request)
        workflows = []
        for spec, reasons in workflows_for(subscription, user=request.user):
            url = None
            if can_run and not reasons:
                url = reverse("admin:subscriptions_subscription_start", args=[subscription.pk, spec.name])
            workflows.append({"spec": spec, "allowed": not reasons, "reasons": reasons, "start_url": url})
        # While the engine is paused the Start buttons show, disabled, saying why (a start would be refused).
        pause = pause_of(request)
        return {
            "start_paused_reason": pause.reason() if pause is not None else "",
            "subscription_processes": processes,
            "subscription_processes_total": total,
            "subscription_processes_more": max(0, total - len(processes)),
            "startable_workflows": workflows,
            "can_run_processes": can_run,
            "set_in_sync_url": (
                reverse("admin:subscriptions_subscription_set_in_sync", args=[subscription.pk])
                if can_run and not subscription.insync else None
            ),
            "last_validation": self.last_validation(subscription),
            "out_of_sync": self.out_of_sync(subscription),
        }

    @staticmethod
    def last_validation(subscription: Subscription) -> dict[str, Any] | None:
        """The newest process of a validate workflow on the subscription (one query), or None."""
        link = (
            ProcessSubscription.objects.filter(subscription=subscription, process__workflow__target=Target.VALIDATE)
            .select_related("process__workflow")
            .order_by("-process__started_at")
            .first()
        )
        if link is None:
            return None
        return {"process": link.process, "url": process_admin_url(link.process_id)}

    @staticmethod
    def out_of_sync(subscription: Subscription) -> dict[str, Any] | None:
        """For the banner of an out-of-sync subscription: since when, and the processes that hold it."""
        if subscription.insync:
            return None
        # The same reading as the reasons a workflow cannot start: a process of a workflow usable while out
        # of sync (modify_note) does not hold it.
        holders = [h for h in holding_processes(subscription) if holds(h)]
        return {
            "since": subscription.out_of_sync_since,
            "holders": [{"holder": h, "url": process_admin_url(h.process_id)} for h in holders],
        }

    # --- helpers for the two action pages ------------------------------------------------------
    def _subscription(self, request: HttpRequest, object_id: str) -> Subscription:
        if not self.can_run(request):
            raise PermissionDenied("you need the permission processes.run_process")
        try:
            subscription = get_subscription(admin.utils.unquote(object_id))
        except NotFound as exc:
            raise Http404(str(exc)) from None
        if not self.has_view_or_change_permission(request, subscription):
            raise PermissionDenied
        return subscription

    def _change_url(self, subscription: Subscription) -> str:
        return reverse("admin:subscriptions_subscription_change", args=[subscription.pk])

    def _page(self, request: HttpRequest, template: str, subscription: Subscription, title: str,
              **context: Any) -> TemplateResponse:
        return TemplateResponse(request, template, {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": subscription,
            "subscription": subscription,
            "change_url": self._change_url(subscription),
            "title": title,
            "has_view_permission": self.has_view_permission(request, subscription),
            **context,
        })

    # --- start a workflow ----------------------------------------------------------------------
    def start_workflow_view(self, request: HttpRequest, object_id: str, workflow_name: str) -> HttpResponse:
        subscription = self._subscription(request, object_id)
        found = {spec.name: (spec, reasons) for spec, reasons in workflows_for(subscription, user=request.user)}
        if workflow_name not in found:
            raise Http404(f"no workflow {workflow_name} for this subscription")
        spec, reasons = found[workflow_name]
        change_url = self._change_url(subscription)
        if reasons:
            messages.error(request, f"cannot start {spec.name}: " + "; ".join(reasons))
            return HttpResponseRedirect(change_url)
        form = form_for(spec.initial_input_form, data=request.POST if request.method == "POST" else None,
                        initial=initial_input(spec, subscription))
        # The version the page showed: a start from a page someone else's change has made stale is
        # refused (and the user sent back to the current subscription) instead of acting on it unseen.
        seen = request.POST.get("subscription_version", "") if request.method == "POST" else ""
        seen_version = int(seen) if seen.isdigit() else subscription.version
        if request.method == "POST" and form.is_valid():
            try:
                process = start_process(
                    spec.name, subscription_id=subscription.pk,
                    user_input=input_from(form), by=request.user, subscription_version=seen_version,
                )
            except InvalidInput as exc:
                put_errors_on(form, exc)
            except (OrchestratorError, PermissionDenied) as exc:
                messages.error(request, str(exc) or "you may not start this workflow")
                return HttpResponseRedirect(change_url)
            else:
                record(self, request, subscription, f"Started {spec.name} (process {process.short_id})")
                messages.success(
                    request, f"Started {spec.name} on {subscription}: process {process.process_id} is {process.status}."
                )
                return HttpResponseRedirect(process_admin_url(process.process_id))
        return self._page(
            request, "admin/subscriptions/subscription/start_workflow.html", subscription,
            f"Start {spec.name}", spec=spec, form=form, seen_version=seen_version,
            adminform=helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),
            errors=helpers.AdminErrorList(form, []) if form.is_bound else None,
        )

    # --- set in sync ---------------------------------------------------------------------------
    def set_in_sync_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        subscription = self._subscription(request, object_id)
        change_url = self._change_url(subscription)
        if subscription.insync:
            messages.info(request, f"{subscription} is in sync already.")
            return HttpResponseRedirect(change_url)
        form = SetInSyncForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                set_in_sync(subscription.pk, by=request.user, reason=form.cleaned_data["reason"])
            except InvalidInput as exc:
                put_errors_on(form, exc)
            except OrchestratorError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(change_url)
            else:
                record(self, request, subscription, with_reason("Set in sync", form.cleaned_data["reason"]))
                messages.success(request, f"{subscription} is set in sync; the reason is kept in its history.")
                return HttpResponseRedirect(change_url)
        return self._page(
            request, "admin/subscriptions/subscription/set_in_sync.html", subscription,
            f"Set {subscription} in sync", form=form, holders=holding_processes(subscription),
            adminform=helpers.AdminForm(form, [(None, {"fields": ["reason"]})], {}),
            errors=helpers.AdminErrorList(form, []) if form.is_bound else None,
        )


if admin.site.is_registered(Subscription):
    admin.site.unregister(Subscription)
admin.site.register(Subscription, SubscriptionProcessesAdmin)
