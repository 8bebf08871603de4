"""Trigram indexes for substring search: GIN with gin_trgm_ops on PostgreSQL, nothing on other databases."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.postgres.indexes import GinIndex

logger = logging.getLogger(__name__)


class TrigramIndex(GinIndex):
    """A GIN trigram index (pg_trgm's `gin_trgm_ops`): it serves `column ILIKE '%word%'` on PostgreSQL.

    Other databases have no such index, so there it writes an SQL comment instead of DDL. A plain GinIndex
    would become an ordinary B-tree index on SQLite (which drops `USING gin` and the operator class): no
    help to `LIKE '%word%'`, yet paid for on every write. Deciding in the index itself, rather than only in
    the migration that adds it, also covers SQLite's table rebuilds (most later schema changes), which
    create each of the model's indexes again. The migration adding these installs pg_trgm too.
    """

    def __init__(self, *, fields: list[str], name: str, **kwargs: Any) -> None:
        kwargs["opclasses"] = ["gin_trgm_ops"] * len(fields)
        super().__init__(fields=fields, name=name, **kwargs)

    def deconstruct(self) -> tuple[str, Any, dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        kwargs.pop("opclasses", None)  # always gin_trgm_ops, set by __init__
        return path, args, kwargs

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return _skipped(self.name, schema_editor)
        return super().create_sql(model, schema_editor, using=using, **kwargs)

    def remove_sql(self, model: Any, schema_editor: Any, **kwargs: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return _skipped(self.name, schema_editor)
        return super().remove_sql(model, schema_editor, **kwargs)


def _skipped(name: str, schema_editor: Any) -> str:
    # A comment is a statement every database runs as nothing, and `sqlmigrate` shows why nothing happens.
    return f"-- trigram index {name}: PostgreSQL only, nothing to do on {schema_editor.connection.vendor}"
