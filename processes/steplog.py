"""The engine's per-step SQL: lock a process, then log a step and move the process on, in few round trips.

Every step of every process passes through here, so this is plain SQL on Django's connection (same
transaction, same locks) instead of the ORM, whose query building would cost more than the database
work itself. Names come from the models' _meta, values go through the fields' own adapters.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections

from processes.leases import Lease
from processes.models import EngineSettings, InputState, Process, ProcessLease, ProcessStep
from processes.statelog import Entry
from workflows.models import Workflow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Locked:
    """What a step needs to know of its process, read under the process's row lock."""

    process_id: uuid.UUID | str
    status: str
    current_step: int
    current_attempt: int
    workflow_version: list[str]
    acting_user: str
    workflow_name: str
    engine_paused: bool
    # The process's run record: who holds it now (None: no record), and an abort asked for meanwhile.
    lease_owner: str | None = None
    abort_requested_by: str | None = None
    abort_reason: str = ""
    # A child process's parent and the parent's step that started it (processes.joins); None otherwise.
    parent_id: uuid.UUID | str | None = None
    parent_step: int | None = None


def _column(model: type, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _table(model: type) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _lock_sql(vendor: str, for_update: bool) -> str:
    p, w, e, lt = _table(Process), _table(Workflow), _table(EngineSettings), _table(ProcessLease)
    columns = ", ".join(f"p.{_column(Process, name)}" for name in (
        "status", "current_step", "current_attempt", "workflow_version", "acting_user", "parent", "parent_step"))
    lease_columns = ", ".join(f"l.{_column(ProcessLease, name)}" for name in (
        "owner", "abort_requested_at", "abort_requested_by", "abort_reason"))
    # Only the process row is locked: the run record stays writable (an abort request) while a step runs.
    lock = " FOR UPDATE OF p" if for_update else ""
    return (
        f"SELECT {columns}, w.{_column(Workflow, 'name')}, "
        f"(SELECT e.{_column(EngineSettings, 'paused')} FROM {e} e WHERE e.{_column(EngineSettings, 'id')} = 1), "
        f"{lease_columns} "
        f"FROM {p} p INNER JOIN {w} w ON w.{_column(Workflow, 'workflow_id')} = p.{_column(Process, 'workflow')} "
        f"LEFT JOIN {lt} l ON l.{_column(ProcessLease, 'process')} = p.{_column(Process, 'process_id')} "
        f"WHERE p.{_column(Process, 'process_id')} = %s{lock}"
    )


class _Statements:
    """Runs the engine's statements in the current transaction, on the connection this thread uses.

    On PostgreSQL, through the driver's own cursor (with Django's error translation, so callers see
    Django's DatabaseError as from any query): Django's cursor wrapper, and every `connection.` lookup
    (a thread-local one each), cost more Python per statement than the rest of the engine's step. Where
    queries are being logged (DEBUG, CaptureQueriesContext, the benchmark's query counts), Django's cursor,
    so that they show. Values go to the driver as they are where it adapts them itself (aware datetimes,
    UUIDs, on PostgreSQL), through the fields' adapters elsewhere (SQLite stores both as text).
    """

    __slots__ = ("db", "native")

    def __init__(self) -> None:
        self.db = connections[DEFAULT_DB_ALIAS]
        self.native = self.db.vendor == "postgresql"

    @property
    def vendor(self) -> str:
        return self.db.vendor

    def pk(self, value: uuid.UUID | str) -> Any:
        if self.native:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return Process._meta.pk.get_db_prep_value(value, self.db)

    def when(self, value: datetime) -> Any:
        if self.native and value.tzinfo is not None:
            return value
        return _WHEN_FIELD.get_db_prep_value(value, self.db)

    def run(self, statements: tuple[str, ...], params: tuple[list[Any], ...], *, fetch: bool = False) -> Any:
        """Execute each statement with its parameters; with `fetch`, return the last one's first row."""
        db = self.db
        if not self.native or db.connection is None or db.queries_logged:
            with db.cursor() as cursor:
                for sql, values in zip(statements, params, strict=True):
                    cursor.execute(sql, values)
                return cursor.fetchone() if fetch else None
        with db.wrap_database_errors, db.connection.cursor() as cursor:
            for sql, values in zip(statements, params, strict=True):
                cursor.execute(sql, values)
            return cursor.fetchone() if fetch else None


def lock(process_id: uuid.UUID | str) -> Locked | None:
    """Lock the process row (until the transaction ends) and read it with the engine's pause flag and its
    run record (who holds it, and whether an abort was asked for)."""
    run = _Statements()
    sql = _lock_sql(run.vendor, run.db.features.has_select_for_update_of)
    row = run.run((sql,), ([run.pk(process_id)],), fetch=True)
    if row is None:
        return None
    (status, current_step, attempt, version, acting_user, parent_id, parent_step, workflow_name, paused,
     owner, abort_at, abort_by, abort_reason) = row
    if isinstance(version, str | bytes):
        version = json.loads(version)
    return Locked(process_id, status, current_step, attempt, version, acting_user, workflow_name, bool(paused),
                  owner, (abort_by or "?") if abort_at is not None else None, abort_reason or "", parent_id,
                  parent_step)


_STEP_COLUMNS = ("process", "name", "status", "state", "delta", "created_by", "started_at", "completed_at", "attempt")
_JSON_COLUMNS = ("state", "delta")


def _placeholders(vendor: str) -> str:
    # The state and delta come as JSON text (statelog serialised them, and knows their size); PostgreSQL
    # is told it is jsonb.
    cast = "::jsonb" if vendor == "postgresql" else ""
    return ", ".join(f"%s{cast}" if name in _JSON_COLUMNS else "%s" for name in _STEP_COLUMNS)


@cache
def _advance_sql(vendor: str, with_status: bool, lease: str) -> tuple[str, ...]:
    """The statements of advance(); `lease` is "renew", "keep" (renewed recently) or "release" (the run ends)."""
    p, s, lt = _table(Process), _table(ProcessStep), _table(ProcessLease)
    sets = [f"{_column(Process, n)} = %s" for n in ("current_step", "last_step", "current_attempt",
                                                      "last_modified_at")]
    if with_status:
        sets += [f"{_column(Process, 'status')} = %s", f"{_column(Process, 'failed_reason')} = ''",
                 f"{_column(Process, 'traceback')} = ''"]
    update = f"UPDATE {p} SET {', '.join(sets)} WHERE {_column(Process, 'process_id')} = %s"
    lease_where = f"{_column(ProcessLease, 'process')} = %s AND {_column(ProcessLease, 'owner')} = %s"
    lease_sql = ""
    if lease == "renew":
        lease_sql = f"UPDATE {lt} SET {_column(ProcessLease, 'expires_at')} = %s WHERE {lease_where}"
    elif lease == "release":
        lease_sql = f"DELETE FROM {lt} WHERE {lease_where}"
    # error, error_type and traceback are NOT NULL text columns: a success leaves them empty.
    step_columns = [_column(ProcessStep, n) for n in (*_STEP_COLUMNS, "error", "error_type", "traceback")]
    insert = (
        f"INSERT INTO {s} ({', '.join(step_columns)}) "
        f"VALUES ({_placeholders(vendor)}, '', '', '')"
    )
    if vendor == "postgresql":
        # One round trip: the process update and the lease ride along with the log insert.
        leased = f", leased AS ({lease_sql})" if lease_sql else ""
        return (f"WITH moved AS ({update}){leased} {insert}",)
    return (update, lease_sql, insert) if lease_sql else (update, insert)


def advance(locked: Locked, *, step_name: str, step_status: str, entry: Entry, started: datetime,
            finished: datetime, lease: Lease, new_status: str | None = None, last: bool = False,
            next_step: int | None = None) -> None:
    """Log the step with what it changed (and the whole state when a snapshot is due: `entry`), and move
    the process to its next step, in this transaction.

    `new_status` is the status a transition method chose (for the last step: completed); without it the
    status stays as it is. The run's lease is renewed, or let go when this is its `last` step. `next_step`
    is the position to move to (default: the step after this one; a step that runs again stays).
    """
    prep = _Statements()
    pid = prep.pk(locked.process_id)
    update_params = [locked.current_step + 1 if next_step is None else next_step, step_name, 1, prep.when(finished)]
    if new_status is not None:
        update_params.append(new_status)
    update_params.append(pid)
    lease_action = "release" if last else "renew" if lease.due() else "keep"
    lease_params = [prep.when(lease.renewed())] if lease_action == "renew" else []
    if lease_action != "keep":
        lease_params += [pid, lease.owner]
    insert_params = [
        pid, step_name, step_status, entry.state_json, entry.delta_json, locked.acting_user, prep.when(started),
        prep.when(finished), locked.current_attempt,
    ]
    statements = _advance_sql(prep.vendor, new_status is not None, lease_action)
    if len(statements) == 1:
        prep.run(statements, (update_params + lease_params + insert_params,))
    else:
        prep.run(statements, (update_params, lease_params, insert_params) if lease_action != "keep" else (
            update_params, insert_params))
    if lease_action == "renew":
        lease.mark_renewed()


_WHEN_FIELD = ProcessStep._meta.get_field("started_at")


@dataclass(frozen=True)
class ChildOf:
    """Where a child process belongs: its parent, the parent's children step, the item and its round."""

    parent_id: uuid.UUID | str
    step: int
    index: int
    round: int = 1


@cache
def _create_sql() -> str:
    p, w, e = _table(Process), _table(Workflow), _table(EngineSettings)
    i, s = _table(InputState), _table(ProcessStep)
    pc = [_column(Process, n) for n in (
        "process_id", "workflow", "status", "current_step", "current_attempt", "last_step", "failed_reason",
        "traceback", "created_by", "acting_user", "started_at", "last_modified_at", "is_task", "note",
        "workflow_version", "parent", "parent_step", "child_index", "child_round")]
    ic = [_column(InputState, n) for n in ("process", "input_type", "step_name", "input", "created_by", "input_time")]
    sc = [_column(ProcessStep, n) for n in (*_STEP_COLUMNS, "error", "error_type", "traceback")]
    # The first row is a snapshot (the initial state) without a delta: shown, its delta is "all added".
    pid = _column(Process, "process_id")
    # Casts: with server-side binding PostgreSQL must know each parameter's type in a SELECT list.
    return (
        f"WITH p AS (INSERT INTO {p} ({', '.join(pc)}) "
        f"SELECT %s::uuid, w.{_column(Workflow, 'workflow_id')}, %s, 1, 1, %s, '', '', %s, %s, "
        f"%s::timestamptz, %s::timestamptz, %s::boolean, '', %s::jsonb, %s::uuid, %s::integer, %s::integer, "
        f"%s::integer "
        f"FROM {w} w WHERE w.{_column(Workflow, 'name')} = %s AND w.{_column(Workflow, 'deleted_at')} IS NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {e} e WHERE e.{_column(EngineSettings, 'paused')}) RETURNING {pid}), "
        f"i AS (INSERT INTO {i} ({', '.join(ic)}) SELECT {pid}, %s, '', %s::jsonb, %s, %s::timestamptz FROM p), "
        # Its run record: claimed by the run that starts here (no claim of its own needed), or queued for
        # the executor's workers (the sweep hands it over again if none takes it).
        f"l AS (INSERT INTO {_table(ProcessLease)} ({_column(ProcessLease, 'process')}, "
        f"{_column(ProcessLease, 'owner')}, {_column(ProcessLease, 'expires_at')}, "
        f"{_column(ProcessLease, 'position')}) SELECT {pid}, %s, %s::timestamptz, 1 FROM p) "
        f"INSERT INTO {s} ({', '.join(sc)}) "
        f"SELECT {pid}, %s, %s, %s::jsonb, NULL, %s, %s::timestamptz, %s::timestamptz, 1, '', '', '' FROM p "
        f"RETURNING {_column(ProcessStep, 'process')}"
    )


def create(*, process_id: uuid.UUID, workflow_name: str, status: str, first_step: str, who: str, is_task: bool,
           version: list[str], user_input: dict[str, Any], state_json: str, now: datetime,
           input_type: str, step_status: str, owner: str, expires_at: datetime, child: ChildOf | None = None) -> bool:
    """On PostgreSQL, create the process, its initial input, its first log row and its run record (held by
    `owner`, or queued when `owner` is empty, until `expires_at`) in one statement; a child with its link to
    its parent (processes.joins).

    Returns False (and writes nothing) when that cannot be done here: another database, the engine
    paused, or no live row for the workflow yet; the caller then takes the general path, which says why.
    """
    if connection.vendor != "postgresql":
        return False
    prep = _Statements()
    version_field = Process._meta.get_field("workflow_version")
    input_field = InputState._meta.get_field("input")
    params = [
        process_id, status, first_step, who, who, prep.when(now), prep.when(now), is_task,
        version_field.get_db_prep_value(version, connection),
        *((child.parent_id, child.step, child.index, child.round) if child else (None, None, None, 1)), workflow_name,
        input_type, input_field.get_db_prep_value(user_input, connection), who, prep.when(now),
        owner, prep.when(expires_at),
        first_step, step_status, state_json, who, prep.when(now), prep.when(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_create_sql(), params)
        return cursor.fetchone() is not None
