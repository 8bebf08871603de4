"""The process list ordered by last_modified_at, served by the settled_at index instead of an index on it."""

from __future__ import annotations

from django.db import connection
from django.db.models import Q, QuerySet

from processes.models import Process, ProcessStatus

ORDER_FIELD = "last_modified_at"


def narrow_to_top(queryset: QuerySet[Process], rows: int) -> QuerySet[Process]:
    """The same first `rows` rows of `queryset` when it is ordered by last_modified_at, from far fewer rows.

    last_modified_at has no index (each step of a running process updates it: see Process.settled_at),
    so the list would sort every matching process to show 50. But a process that is not running has
    settled_at = last_modified_at, indexed. So the first `rows` rows are among the running processes
    (few: as many as the executors run at once) and the first `rows` processes that are not running, in
    settled_at order: one index read finds the settled_at of the last of those (a threshold), and the list
    reads the running ones and those up to the threshold (a bitmap OR of two indexes), then sorts those.

    Other orderings, and SQLite (no trigger keeps settled_at there), are returned unchanged.
    """
    order = list(queryset.query.order_by)
    if connection.vendor != "postgresql" or not order or str(order[0]).lstrip("-") != ORDER_FIELD:
        return queryset
    descending = str(order[0]).startswith("-")
    rest = queryset.exclude(status=ProcessStatus.RUNNING).filter(settled_at__isnull=False)
    ordered = rest.order_by("-settled_at" if descending else "settled_at")
    threshold = list(ordered.values_list("settled_at", flat=True)[rows - 1:rows])
    if not threshold:
        return queryset  # fewer than `rows` processes at rest: the sort is as small as it gets
    bound = Q(settled_at__gte=threshold[0]) if descending else Q(settled_at__lte=threshold[0])
    return queryset.filter(Q(status=ProcessStatus.RUNNING) | bound)
