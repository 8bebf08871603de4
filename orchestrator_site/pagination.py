"""Pages of API lists and admin lists whose count stops at ORCHESTRATOR["LIST_COUNT_LIMIT"] rows."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator_site.conf import orchestrator_setting

# The largest OFFSET or LIMIT a database takes (a signed 64-bit integer).
BIGINT_MAX = 2**63 - 1


def count_limit() -> int:
    return int(orchestrator_setting("LIST_COUNT_LIMIT"))


def capped_count(rows: QuerySet[Any] | Sequence[Any], limit: int) -> tuple[int, bool]:
    """How many rows there are, counting no further than `limit`: (the count, whether it is exact).

    A COUNT(*) over a million rows reads a million rows (PostgreSQL keeps no row count); over
    `LIMIT limit + 1` it stops there, so a page costs the same at any table size. Past the limit the
    answer is `limit` and not exact ("more than `limit`").
    """
    if not isinstance(rows, QuerySet):
        return len(rows), True
    # No ORDER BY: any limit+1 matching rows will do, in whatever order the cheapest scan finds them.
    found = rows.order_by().values("pk")[: limit + 1].count()
    return (found, True) if found <= limit else (limit, False)


def count_around_page(rows: QuerySet[Any] | Sequence[Any], offset: int, shown: int,
                      has_more: bool) -> tuple[int, bool]:
    """How many rows a list has, given its page of `shown` rows from `offset` and whether more follow it:
    (the count, whether it is exact).

    No query when the page is the list's end (a short first page, or the last); otherwise capped_count.
    Past the limit the count is a lower bound: the limit, or the rows seen up to the end of this page (and
    the one after it) when that is more; a page past the end saw none.
    """
    if not has_more and (shown or offset == 0):
        return offset + shown, True
    found, exact = capped_count(rows, count_limit())
    if exact:
        return found, True
    return max(found, offset + shown + int(has_more) if shown else 0), False


class Pagination(LimitOffsetPagination):
    """?limit=&offset= pages (at most API_MAX_PAGE_SIZE rows) with a count that stops at LIST_COUNT_LIMIT.

    The page is read with one row more than asked for, which says whether there is a next page; the
    count is only queried when that row is there (a short first or last page counts itself). Past the
    limit, `count_exact` is false and `count` a lower bound: there are at least that many.
    """

    count_exact: bool = True
    has_more: bool = False

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return int(orchestrator_setting("API_MAX_PAGE_SIZE"))

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.offset = self.get_offset(request)
        # A view may read the page from fewer rows than the whole list (an ordering without an index of
        # its own); the count is of the whole list.
        narrow = getattr(view, "narrow_to_top", None)
        if self.offset + self.limit + 1 > BIGINT_MAX:
            rows = []  # no table holds that many rows, and the database refuses such an OFFSET
        else:
            page_rows = narrow(queryset, self.offset + self.limit + 1) if narrow is not None else queryset
            rows = list(page_rows[self.offset:self.offset + self.limit + 1])
        self.has_more = len(rows) > self.limit
        rows = rows[: self.limit]
        self.count, self.count_exact = count_around_page(queryset, self.offset, len(rows), self.has_more)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        return rows

    def get_next_link(self) -> str | None:
        return super().get_next_link() if self.has_more else None

    def get_paginated_response(self, data: Any) -> Response:
        return Response({
            "count": self.count,
            "count_exact": self.count_exact,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "results": data,
        })

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        limit = f"{count_limit():,}"
        described["properties"]["count"]["description"] = (
            f"How many items match, counted up to {limit} (ORCHESTRATOR[\"LIST_COUNT_LIMIT\"]): when more "
            "match, `count_exact` is false and this is a lower bound (at least this many, and at least up to the "
            "end of this page)."
        )
        described["properties"] = {
            "count": described["properties"]["count"],
            "count_exact": {
                "type": "boolean",
                "description": "False when more items match than were counted: `count` is then \"at least\". "
                               "`next` says whether there is a next page either way.",
            },
            **{key: value for key, value in described["properties"].items() if key != "count"},
        }
        described["required"] = ["count", "count_exact", "results"]
        return described


class CappedPaginator(Paginator):
    """The admin list's paginator: the count stops at LIST_COUNT_LIMIT (so do its pages)."""

    @cached_property
    def _capped(self) -> tuple[int, bool]:
        return capped_count(self.object_list, count_limit())

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        return self._capped[0]

    @property
    def count_exact(self) -> bool:
        return self._capped[1]
