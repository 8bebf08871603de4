"""Live admin pages: which processes change by themselves, how often their pages check, and the tags they compare."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes.lookups import step_label
from processes.models import Process, ProcessStatus
from workflows.dsl import human_duration

logger = logging.getLogger(__name__)

P = ProcessStatus

# Moves on by itself, step by step: a page showing one checks often.
MOVING = frozenset({P.CREATED, P.RUNNING, P.RESUMED})
# Moves on when the scheduler's sweep, an external system's callback or its last child says so: minutes apart,
# checked less often (a parent's page also reloads when one of its children moved: its ETag takes them in).
WAITING = frozenset({P.WAITING, P.AWAITING_CALLBACK, P.AWAITING_CHILDREN})
# Everything else (completed, aborted, failed, suspended, ...) changes only by a person's action, made from a
# page that then shows the outcome: nothing to check.
UNFINISHED = MOVING | WAITING

FAST, SLOW, OFF = "fast", "slow", "off"


def process_etag(last_modified_at: datetime, process_status: str, note: str, staff: bool, children: str = "") -> str:
    """The API detail's ETag. The process page embeds it, and its poll sends it back (304 while unchanged)."""
    # Staff see tracebacks, others do not: two representations, two tags. The note is in it because setting
    # one does not touch last_modified_at (services.set_note says why). So are a parent's children (their
    # count and last change: processes.children.stamp_of): they move while the parent's own row stays as it is.
    note_digest = hashlib.sha256((note or "").encode()).hexdigest()
    raw = f"{last_modified_at.isoformat()}|{process_status}|{note_digest}|{int(staff)}"
    if children:
        raw += f"|{children}"
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def rows_etag(rows: Iterable[tuple[Any, str, datetime]]) -> str:
    """One tag for several processes' (id, status, last_modified_at): the process list's poll compares it."""
    digest = hashlib.sha256()
    for pk, process_status, modified in sorted(rows, key=lambda row: str(row[0])):
        digest.update(f"{pk}|{process_status}|{modified.isoformat()};".encode())
    return '"' + digest.hexdigest()[:32] + '"'


def mode_of(statuses: Iterable[str]) -> str:
    """How often a page showing processes in these statuses checks: the busiest one decides."""
    seen = set(statuses)
    if seen & MOVING:
        return FAST
    return SLOW if seen & WAITING else OFF


def seconds_of(mode: str) -> float:
    """How many seconds apart a page in this mode checks; 0: it does not (also when the setting is 0)."""
    if mode == FAST:
        return float(orchestrator_setting("LIVE_POLL_SECONDS"))
    if mode == SLOW:
        return float(orchestrator_setting("LIVE_POLL_WAITING_SECONDS"))
    return 0.0


def poll_config(statuses: Iterable[str], url: str, etag: str) -> dict[str, Any]:
    """What a live page's element carries: data-live (fast, slow, off), the seconds between checks, URL, tag."""
    mode = mode_of(statuses)
    seconds = seconds_of(mode)
    if seconds <= 0:
        mode = OFF
    return {"mode": mode, "seconds": f"{seconds:g}", "url": url, "etag": etag}


def counts_config() -> dict[str, str]:
    """The seconds between checks of the counts: while any process is unfinished, and while none is."""
    return {"seconds": f"{float(orchestrator_setting('LIVE_COUNTS_SECONDS')):g}",
            "idle_seconds": f"{float(orchestrator_setting('LIVE_COUNTS_IDLE_SECONDS')):g}",
            "unfinished": ",".join(sorted(UNFINISHED))}


def running_step(process: Process, now: datetime | None = None) -> dict[str, Any] | None:
    """The step a moving process is at, and since when: "running step 4 'Deploy config' since 06:18:30 (42 s)".

    A step runs in one transaction that holds the process row and writes it only when it ends (with its log
    row), so the row's last_modified_at is when the step (or its current run, for a step that runs again)
    began: the end of the step before it, or the retry or resume that set the process going again. No
    query: the page has the row already. None for a process that is not moving.
    """
    if process.status not in MOVING:
        return None
    now = now or timezone.now()
    since = process.last_modified_at
    elapsed = max((now - since).total_seconds(), 0.0)
    return {
        "verb": "running" if process.status == P.RUNNING else "about to run",
        "number": process.current_step + 1,
        "name": step_label(list(process.workflow_version), process.current_step),
        "since": since,
        "today": timezone.localdate(since) == timezone.localdate(now),
        "elapsed_seconds": f"{elapsed:.1f}",
        "elapsed": human_duration(now - since),
    }
