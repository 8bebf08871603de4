"""The process page's family: a parent's children per step (summary and table), a child's link to its parent, and
what an abort does to them."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from processes.admin_columns import REASON_CHARS, cut
from processes.children import (
    ChildrenStep,
    ParentLink,
    children_of,
    may_have_children,
    parent_of,
    unfinished_children,
)
from processes.models import FINISHED, Process, ProcessStatus

logger = logging.getLogger(__name__)

P = ProcessStatus


def changelist_of_children(process_id: Any) -> str:
    """The process list filtered to this parent's children (admin_filters.ParentFilter): all of them, paged."""
    return f"{reverse('admin:processes_process_changelist')}?parent={process_id}"


def _step_view(step: ChildrenStep) -> dict[str, Any]:
    rows = [
        {"row": row, "url": reverse("admin:processes_process_change", args=[row.process_id]),
         "reason": cut(row.failed_reason, REASON_CHARS), "beyond": row.item > step.listed_in_order}
        for row in step.rows
    ]
    return {"step": step, "rows": rows, "mixed": not step.workflow}


def _parent_view(link: ParentLink | None) -> dict[str, Any] | None:
    if link is None:
        return None
    return {"link": link, "url": reverse("admin:processes_process_change", args=[link.process_id])}


class ChildrenPages:
    """For ProcessAdmin: the family parts of the process page and of the abort page."""

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        # Two queries for a parent whatever its number of children, one for a child, none for the others.
        found = children_of(process)
        family = None
        if found is not None:
            family = {"children": found, "steps": [_step_view(step) for step in found.steps],
                      "all_url": changelist_of_children(process.pk)}
        return {**super().detail_context(request, process), "process_children": family,
                "child_of": _parent_view(parent_of(process))}

    def abort_context(self, process: Process) -> dict[str, Any]:
        """What aborting this process does to its family: its unfinished children are aborted with it; a child's
        abort fails its waiting parent's step."""
        extra: dict[str, Any] = {"abort_children": unfinished_children(process) if may_have_children(process) else 0}
        link = parent_of(process)
        if link is not None and link.status == P.AWAITING_CHILDREN and process.status not in FINISHED:
            extra["abort_child_of"] = _parent_view(link)
        return extra
