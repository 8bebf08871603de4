"""A process's step log a page at a time, each row with its number, its delta and the states around it.

The API detail and the admin page show the newest page and link to the others; a page costs the same
few queries whatever the length of the log (a count, the page's rows, the state before the page).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator_site.conf import orchestrator_setting
from processes.models import Process, ProcessStep
from processes.statelog import Shown, walk

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepPage:
    """Rows `offset + 1` to `offset + len(items)` of a log of `total` rows."""

    items: list[tuple[int, Shown]]  # (number from 1, row shown)
    offset: int
    limit: int
    total: int

    @property
    def first(self) -> int:
        return self.offset + 1

    @property
    def last(self) -> int:
        return self.offset + len(self.items)

    @property
    def earlier_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    @property
    def later_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def newest_offset(self) -> int:
        return newest_offset(self.total, self.limit)


def page_size() -> int:
    return int(orchestrator_setting("STEPS_PAGE_SIZE"))


def newest_offset(total: int, limit: int) -> int:
    return max(0, total - limit)


def step_page(process: Process, *, offset: int | None = None, limit: int | None = None,
              with_traceback: bool = True) -> StepPage:
    """The rows from `offset` (default: the newest page), at most `limit` (default STEPS_PAGE_SIZE)."""
    limit = max(1, limit or page_size())
    rows = ProcessStep.objects.filter(process=process)
    total = rows.count()
    if offset is None:
        offset = newest_offset(total, limit)
    offset = max(0, offset)
    if not with_traceback:
        rows = rows.defer("traceback")  # long, and not shown to everyone
    page_rows = list(rows.order_by("id")[offset:offset + limit])
    shown = walk(process, page_rows, from_first=offset == 0)
    items = [(offset + index + 1, item) for index, item in enumerate(shown)]
    return StepPage(items, offset, limit, total)

