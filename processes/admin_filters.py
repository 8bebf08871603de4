"""Filters of the admin's process list whose choices are read without reading the whole process table."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest

from processes.models import Process

# The filter lists this many names at most (alphabetically); any other is still a filter by URL
# (?created_by__exact=name) or through the API's ?created_by=.
MAX_CREATORS = 100


def creators(limit: int | None = None) -> list[str]:
    """The distinct names processes were started by, in order, at most `limit` (MAX_CREATORS) of them.

    On PostgreSQL a loose index scan over process_creator_started (created_by first): one index probe
    per name ("the first name after the last one"), so its cost follows the number of names, not of
    processes. SELECT DISTINCT would read every row: a million for a large table, on every list page.
    """
    limit = MAX_CREATORS if limit is None else limit
    if connection.vendor != "postgresql":
        return list(Process.objects.order_by("created_by").values_list("created_by", flat=True).distinct()[:limit])
    table = connection.ops.quote_name(Process._meta.db_table)
    column = connection.ops.quote_name(Process._meta.get_field("created_by").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE names(name) AS ("
            f" (SELECT {column} FROM {table} ORDER BY {column} LIMIT 1)"
            f" UNION ALL"
            f" SELECT (SELECT {column} FROM {table} WHERE {column} > names.name ORDER BY {column} LIMIT 1)"
            f" FROM names WHERE names.name IS NOT NULL"
            f") SELECT name FROM names WHERE name IS NOT NULL LIMIT %s",
            [limit],
        )
        return [name for (name,) in cursor.fetchall()]


class CreatedByFilter(admin.SimpleListFilter):
    """Who started the process: the names from creators(), with the same URL as Django's own field filter."""

    title = "created by"
    parameter_name = "created_by__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = creators()
        chosen = self.value()
        if chosen and chosen not in names:
            names.append(chosen)  # chosen by URL beyond the listed ones: still shown as the selection
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Process]) -> QuerySet[Process]:
        chosen = self.value()
        return queryset.filter(created_by=chosen) if chosen else queryset


class HierarchyFilter(admin.SimpleListFilter):
    """Top-level processes or child processes only (the API's ?is_child=, with the same values); all by default."""

    title = "hierarchy"
    parameter_name = "is_child"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("false", "top-level only"), ("true", "children only")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Process]) -> QuerySet[Process]:
        # parent is a column of the process: no join.
        if self.value() == "false":
            return queryset.filter(parent__isnull=True)
        if self.value() == "true":
            return queryset.filter(parent__isnull=False)
        return queryset


class ParentFilter(admin.SimpleListFilter):
    """One process's children, of every step and round (?parent=<id>, linked from the parent's page); shown only
    while chosen (a list of every parent would read the processes)."""

    title = "parent"
    parameter_name = "parent"

    def _chosen(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(str(self.value())) if self.value() else None
        except ValueError:
            return None

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        chosen = self._chosen()
        return [(str(chosen), f"children of {str(chosen)[:8]}…")] if chosen else []

    def has_output(self) -> bool:
        # Also with a malformed id: the filter must still apply (and find nothing) rather than be dropped.
        return self.value() is not None

    def queryset(self, request: HttpRequest, queryset: QuerySet[Process]) -> QuerySet[Process]:
        if self.value() is None:
            return queryset
        chosen = self._chosen()
        return queryset.filter(parent_id=chosen) if chosen else queryset.none()
