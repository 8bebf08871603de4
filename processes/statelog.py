"""The state in the step log: every row keeps what its step changed (its delta); some rows also keep the
whole state (a snapshot), and the state after any row is the last snapshot up to it plus the deltas after.

Why: a row holding the whole state made the log grow with the square of the steps (a 200-step process
whose steps add 1 kB each wrote 21 MB) and every step pay for serialising all of it. A delta costs what
the step changed. Snapshots bound how much must be read back: one is written when the deltas since the
last one add up to SNAPSHOT_FACTOR times its size (at least SNAPSHOT_FLOOR_BYTES), after
STATE_SNAPSHOT_MAX_ROWS rows at the latest, and on every row written outside the engine's step path
(failures, suspends, skips, aborts, input): the rows a retry or a resume starts from.

So, whatever the number of steps: snapshots add at most about 1/SNAPSHOT_FACTOR to what the deltas cost
(a state that grows step by step gets snapshots at geometrically spaced steps), and reading the state back
reads the last snapshot and at most SNAPSHOT_FACTOR times its size in deltas (much less when the steps
add keys rather than rewrite them), in at most STATE_SNAPSHOT_MAX_ROWS rows, in one query.

Rows from before deltas existed hold the whole state and no delta: each is a snapshot, and its delta is
worked out against the row before it when shown. Every reader here accepts both.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Subquery

from orchestrator_site.conf import orchestrator_setting
from processes.models import Process, ProcessStep

logger = logging.getLogger(__name__)

# Deltas since the last snapshot may add up to this many times its size before the next one is written.
SNAPSHOT_FACTOR = 8
# ... counting a small state as this size: a few kB of state are cheaper to read as deltas than to copy.
SNAPSHOT_FLOOR_BYTES = 4096

Delta = dict[str, Any]  # {"added": {key: value}, "changed": {key: new value}, "removed": [key, ...]}


def no_change() -> Delta:
    return {"added": {}, "changed": {}, "removed": []}


def diff(before: dict[str, Any], after: dict[str, Any]) -> Delta:
    """What turned `before` into `after`: keys added and changed (with their new values), keys removed."""
    return {
        "added": {key: value for key, value in after.items() if key not in before},
        "changed": {key: value for key, value in after.items() if key in before and before[key] != value},
        "removed": sorted(key for key in before if key not in after),
    }


def apply(state: dict[str, Any], delta: Delta | None) -> dict[str, Any]:
    """`state` with `delta` applied, as a new dict (`state` is not changed)."""
    if not delta:
        return state
    out = dict(state)
    out.update(delta.get("added") or {})
    out.update(delta.get("changed") or {})
    for key in delta.get("removed") or ():
        out.pop(key, None)
    return out


def is_empty(delta: Delta | None) -> bool:
    return not delta or not (delta.get("added") or delta.get("changed") or delta.get("removed"))


def to_json(value: Any) -> str:
    # The state holds plain JSON only (processes.state.to_json_value made sure of it).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Since:
    """What was logged since the last snapshot: decides when the next one is due."""

    rows: int = 0
    delta_bytes: int = 0
    snapshot_bytes: int = 0

    def due(self, delta_bytes: int) -> bool:
        return (self.rows + 1 >= int(orchestrator_setting("STATE_SNAPSHOT_MAX_ROWS"))
                or self.delta_bytes + delta_bytes > SNAPSHOT_FACTOR * max(self.snapshot_bytes, SNAPSHOT_FLOOR_BYTES))

    def after_snapshot(self, snapshot_bytes: int) -> Since:
        return Since(0, 0, snapshot_bytes)

    def after_delta(self, delta_bytes: int) -> Since:
        return Since(self.rows + 1, self.delta_bytes + delta_bytes, self.snapshot_bytes)


@dataclass(frozen=True)
class Entry:
    """A row's state columns as the engine writes them: the delta, and the whole state when a snapshot is due."""

    delta_json: str
    state_json: str | None
    since: Since


def entry(state: dict[str, Any], delta: Delta, since: Since) -> Entry:
    """The columns of the row a step writes, and what is logged since the last snapshot after it."""
    delta_json = to_json(delta)
    if since.due(len(delta_json)):
        state_json = to_json(state)
        return Entry(delta_json, state_json, since.after_snapshot(len(state_json)))
    return Entry(delta_json, None, since.after_delta(len(delta_json)))


def snapshot_since(state: dict[str, Any]) -> Since:
    """After a row holding `state` in full."""
    return Since(0, 0, len(to_json(state)))


# --- reading ---------------------------------------------------------------------------------------
def _rows_from_last_snapshot(process_id: Any, before_id: int | None = None) -> list[tuple[int, Any, Any]]:
    """(id, state, delta) of the process's rows from the last snapshot (included) to the newest row, or to
    the newest row before `before_id`: one query, served by the (process, id) index and the snapshots'
    partial index."""
    rows = ProcessStep.objects.filter(process_id=process_id)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    last_snapshot = rows.filter(state__isnull=False).order_by("-id").values("id")[:1]
    # No snapshot at all (a log whose snapshot was never written): every row from the first, from {}.
    return list(rows.filter(id__gte=_coalesce(Subquery(last_snapshot))).order_by("id")
                .values_list("id", "state", "delta"))


def _coalesce(subquery: Subquery) -> Any:
    from django.db.models import Value
    from django.db.models.functions import Coalesce

    return Coalesce(subquery, Value(0))


def replay(rows: Iterable[tuple[int, Any, Any]], state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state after the last of `rows` (id, state, delta), starting from `state` (or {})."""
    current = dict(state or {})
    for _, full, delta in rows:
        current = dict(full) if isinstance(full, dict) else apply(current, delta)
    return current


def rebuild(process: Process | uuid.UUID | str, before_id: int | None = None) -> tuple[dict[str, Any], Since]:
    """The process's state after its newest row (or its newest row before `before_id`), and what was logged
    since the last snapshot up to there; in one query."""
    process_id = process.pk if isinstance(process, Process) else process
    rows = _rows_from_last_snapshot(process_id, before_id)
    state = replay(rows)
    since = Since()
    if rows and isinstance(rows[0][1], dict):
        since = snapshot_since(rows[0][1])
        for _, _, delta in rows[1:]:
            since = since.after_delta(len(to_json(delta)))
    else:
        # No snapshot read (a log whose first rows were never written): the next row writes one.
        since = Since(int(orchestrator_setting("STATE_SNAPSHOT_MAX_ROWS")), 0, 0)
    return state, since


def state_at(process: Process | uuid.UUID | str, row_id: int) -> dict[str, Any] | None:
    """The state after the process's row `row_id`; None if the process has no such row."""
    process_id = process.pk if isinstance(process, Process) else process
    if not ProcessStep.objects.filter(process_id=process_id, id=row_id).exists():
        return None
    return rebuild(process_id, before_id=row_id + 1)[0]


@dataclass
class Shown:
    """A log row as pages show it: its delta and the state before and after it."""

    row: ProcessStep
    delta: Delta
    before: dict[str, Any]
    after: dict[str, Any]


def walk(process: Process | uuid.UUID | str, rows: list[ProcessStep], *, from_first: bool = False) -> Iterator[Shown]:
    """Each of `rows` (consecutive rows of the process, oldest first, loaded with their `state` and
    `delta`) with its delta and the states around it: the state before the first is rebuilt once (one
    query; none when the rows start `from_first` row of the log), the rest follows in memory. A row without
    a delta (from before deltas) gets one worked out."""
    if not rows:
        return
    state: dict[str, Any] = {} if from_first else rebuild(process, before_id=rows[0].id)[0]
    for row in rows:
        before = state
        if isinstance(row.state, dict):
            state = dict(row.state)
            delta = row.delta if isinstance(row.delta, dict) else diff(before, state)
        else:
            delta = row.delta if isinstance(row.delta, dict) else no_change()
            state = apply(before, delta)
        yield Shown(row, delta, before, state)
