"""Filters, search and ordering of the process list (`GET /api/processes/`)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django_filters import rest_framework as filters

from orchestrator_site.filters import StrictBooleanFilter
from processes.models import Process, ProcessStatus
from processes.search import search_processes
from subscriptions.api.filters import TermSearchFilter
from workflows.models import Workflow


class CommaSeparatedMultipleChoiceField(forms.MultipleChoiceField):
    """Takes `?status=a&status=b` as well as `?status=a,b` (what a hand-written URL tends to use)."""

    def to_python(self, value: Any) -> list[str]:
        values = super().to_python(value)
        return [part.strip() for item in values for part in item.split(",") if part.strip()]


class CommaSeparatedMultipleChoiceFilter(filters.MultipleChoiceFilter):
    field_class = CommaSeparatedMultipleChoiceField


class ProcessOrderingFilter(filters.OrderingFilter):
    """The chosen ordering, then the id: pages do not shuffle rows that tie (same status, same second)."""

    def filter(self, qs: QuerySet[Process], value: Any) -> QuerySet[Process]:
        qs = super().filter(qs, value)
        if value:
            qs = qs.order_by(*qs.query.order_by, "process_id")
        return qs


class ProcessFilter(filters.FilterSet):
    # distinct=False: status is a column of the process itself, so no row can repeat; django-filter's default
    # SELECT DISTINCT (and its count over it) made this the slowest filter of a large table.
    status = CommaSeparatedMultipleChoiceFilter(
        choices=ProcessStatus.choices, distinct=False,
        help_text="One or more statuses: repeat the parameter or separate with commas.",
    )
    workflow = filters.CharFilter(method="filter_workflow", help_text="The workflow's name.")
    subscription = filters.UUIDFilter(
        field_name="process_subscriptions__subscription_id", help_text="Processes on this subscription (its id)."
    )
    created_by = filters.CharFilter(help_text="The user name of whoever started the process.")
    is_task = StrictBooleanFilter()
    # A column of the process itself: no join, no DISTINCT (as status).
    is_child = StrictBooleanFilter(
        field_name="parent", lookup_expr="isnull", exclude=True, distinct=False,
        help_text="false: only top-level processes (children hidden); true: only child processes (started by a "
                  "parent's sub-processes or parallel step).",
    )
    parent = filters.UUIDFilter(field_name="parent_id", distinct=False,
                                help_text="The children of this process (its id), of every step and round.")
    started_after = filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte",
                                              help_text="Started at or after this time (ISO 8601).")
    started_before = filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lte",
                                               help_text="Started at or before this time (ISO 8601).")
    ordering = ProcessOrderingFilter(
        fields=(
            ("started_at", "started_at"),
            ("last_modified_at", "last_modified_at"),
            ("status", "status"),
            ("workflow__name", "workflow"),
        ),
        help_text="Sort by started_at, last_modified_at, status or workflow; prefix with - for descending "
                  "(default: -started_at).",
    )

    class Meta:
        model = Process
        fields: list[str] = []

    def filter_workflow(self, queryset: QuerySet[Process], name: str, value: str) -> QuerySet[Process]:
        # The workflow's id first (a small table), then the processes by id: PostgreSQL reads them newest
        # first from process_workflow_started, where a join on the name would sort them all.
        ids = list(Workflow.objects.filter(name=value).values_list("pk", flat=True))
        return queryset.filter(workflow_id__in=ids)


class ProcessSearchFilter(TermSearchFilter):
    """`?search=`: the process search of processes.search, as the admin's search box."""

    search_description = (
        "Words, each of which must be found (ignoring case) in the workflow's name or in one of the process's "
        "subscriptions (its description, customer id, a resource value such as a node name, its product's name "
        "or type); or a process or subscription id, whole or its first 8 or more hex digits."
    )

    def search(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        return search_processes(queryset, term)
