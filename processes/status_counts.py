"""How many processes have each status: summed from the trigger-kept delta rows on PostgreSQL, counted on SQLite."""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django.db.models import Count

from processes.models import Process, ProcessStatus, ProcessStatusCount

logger = logging.getLogger(__name__)

# More delta rows than this and a read folds them into one row per status first: the sum stays a read
# of a few hundred rows, however many status changes happened since (the scheduler folds them too).
FOLD_AFTER_ROWS = 500
# pg_try_advisory_xact_lock key: one fold at a time; a reader that does not get it just sums.
_FOLD_LOCK = 0x70726F63  # "proc"

_TABLE = ProcessStatusCount._meta.db_table


def status_counts() -> dict[str, int]:
    """Every status with its number of processes (0 for none), exact, without reading the process table.

    On PostgreSQL the triggers of migration 0008 keep ProcessStatusCount in step with every write, in the
    writer's transaction; this sums its rows. On SQLite (no triggers) it is a GROUP BY over the processes,
    which suits the embedded database's sizes.
    """
    counts = dict.fromkeys(ProcessStatus.values, 0)
    if connection.vendor != "postgresql":
        for status, n in Process.objects.order_by().values_list("status").annotate(n=Count("pk")):
            counts[status] = n
        return counts
    rows = _sum()
    if sum(n_rows for _, _, n_rows in rows) > FOLD_AFTER_ROWS and fold(more_than=FOLD_AFTER_ROWS):
        rows = _sum()
    for status, n, _ in rows:
        counts[status] = int(n)
    return counts


def _sum() -> list[tuple[str, int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status, SUM(delta), COUNT(*) FROM {_TABLE} GROUP BY status")
        return list(cursor.fetchall())


def fold(*, more_than: int = 0) -> bool:
    """Replace the delta rows by one row per status (none for a status at 0), if there are more than
    `more_than` of them; False if it did not (too few rows, or another fold runs).

    One statement: the rows it deletes are those its snapshot sees, and the sums it inserts are theirs;
    rows that writers add meanwhile (not yet committed) are left for the next fold. Never blocks a writer:
    writers only insert.
    """
    if connection.vendor != "postgresql":
        return False
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {_TABLE} LIMIT %s) AS deltas", [more_than + 1])
        if cursor.fetchone()[0] <= more_than:
            return False
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_FOLD_LOCK])
        if not cursor.fetchone()[0]:
            return False
        cursor.execute(
            f"WITH gone AS (DELETE FROM {_TABLE} RETURNING status, delta) "
            f"INSERT INTO {_TABLE} (status, delta) "
            f"SELECT status, SUM(delta) FROM gone GROUP BY status HAVING SUM(delta) <> 0"
        )
    return True
