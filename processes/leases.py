"""Who runs a process now: leases, claims, hand-overs, and the proof of life of a step in progress.

A running process always has a run record (ProcessLease) from the moment it is handed to an executor:
*queued* until a run takes it, then *claimed* by that run, renewed with its steps, and deleted when the run
stops cleanly. Two facts tell a live run from a dead one, and neither needs a heartbeat thread:

- A run renews its lease at step boundaries, so between steps a live run's lease is fresh.
- During a step, the step's transaction holds the process row's lock (FOR UPDATE) for the step's whole
  duration, however long, and PostgreSQL lets that lock go the moment the run's connection dies. So a
  row that a `SKIP LOCKED` (or `lock_timeout`) probe cannot lock has a step in progress: its run is alive,
  even when its lease lapsed long ago.

So a process is handed to a second run only when its lease lapsed *and* its row is not locked; a claim
waits briefly for the row (LOCK_WAIT_SECONDS) and gives up when a step holds it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes.dberrors import connection_lost, lock_timed_out, storable_text
from processes.models import Process, ProcessLease, ProcessStatus

logger = logging.getLogger(__name__)


@dataclass
class Lease:
    """A run's claim on a process: its owner token, how long each claim or renewal lasts, and when it was
    last renewed (so that fast steps do not each pay for a renewal)."""

    owner: str
    seconds: float
    renewed_at: float = field(default_factory=time.monotonic)

    def renewed(self) -> datetime:
        return timezone.now() + timedelta(seconds=self.seconds)

    def due(self) -> bool:
        # A third of the lease gone: renew now, leaving two thirds as margin for the step to come.
        return time.monotonic() - self.renewed_at > self.seconds / 3

    def mark_renewed(self) -> None:
        self.renewed_at = time.monotonic()


def new_lease(owner: str | None = None) -> Lease:
    # One token per run (not per OS process): two runs in one worker's threads are two owners.
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    return Lease(owner, float(orchestrator_setting("LEASE_SECONDS")))


def local_owner() -> str:
    """The owner token of runs made in this thread right after the transaction that created the process
    (the inline executor): the process is claimed for this thread at its creation, and the run that follows
    in the same thread finds the claim its own, however many processes were created in between."""
    return f"{socket.gethostname()}:{os.getpid()}:thread-{threading.get_ident()}"


def resend_delay(resends: int) -> timedelta:
    """How long a queued process waits for a worker before it is handed over again (the `resends`-th time)."""
    first = float(orchestrator_setting("RESEND_AFTER_SECONDS"))
    cap = float(orchestrator_setting("RESEND_BACKOFF_MAX_SECONDS"))
    return timedelta(seconds=min(first * 2 ** max(resends, 0), cap))


@contextmanager
def lock_wait(seconds: float | None = None) -> Iterator[None]:
    """Row locks taken inside wait at most `seconds` (LOCK_WAIT_SECONDS), then raise (PostgreSQL's lock_timeout).

    In a savepoint: a timeout rolls back to it and the caller's transaction carries on.
    """
    if connection.vendor != "postgresql":
        yield  # SQLite locks the whole database for a writer; there is no row lock to wait for
        return
    timeout = _lock_timeout() if seconds is None else f"{max(int(seconds * 1000), 1)}ms"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [timeout])
        yield
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout TO DEFAULT")


def rows_in_use(process_ids: Iterable[uuid.UUID | str]) -> set[str]:
    """Of these processes, those whose row a transaction holds locked now: a step (or an operator's action)
    is in progress on them. Empty on SQLite, which has no row locks to see."""
    ids = [str(pid) for pid in process_ids]
    if not ids or connection.vendor != "postgresql":
        return set()
    table = connection.ops.quote_name(Process._meta.db_table)
    pk = connection.ops.quote_name(Process._meta.pk.column)
    # FOR KEY SHARE conflicts only with FOR UPDATE (what a step holds) and never blocks a plain UPDATE;
    # SKIP LOCKED leaves out the rows someone holds: those are the ones in use.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}::text FROM {table} WHERE {pk} = ANY(%s::uuid[]) FOR KEY SHARE SKIP LOCKED", [ids])
        free = {row[0] for row in cursor.fetchall()}
    return set(ids) - free


def count_recovery(record: ProcessLease, current_step: int) -> str | None:
    """The run holding `record` died (its lease lapsed, no step in progress): count one more recovery.

    Recoveries count in a row at one step: a run that finished a step since resets the count. Returns why
    the process must be failed instead when it was recovered RECOVERY_MAX_TIMES times at that step already.
    The caller saves `record`.
    """
    limit = int(orchestrator_setting("RECOVERY_MAX_TIMES"))
    record.recoveries = record.recoveries + 1 if record.position == current_step else 1
    record.position = current_step
    if record.recoveries <= limit:
        return None
    last = f" (last error: {record.last_error})" if record.last_error else ""
    return storable_text(
        f"its run stopped {record.recoveries - 1} times in a row at this step without finishing it"
        f"{last}; not running it again. Its worker died, lost the database, or could not record the step's "
        f"outcome; nothing of the step was kept. Retry the process once the cause is fixed, or abort it"
    )


def forget_recoveries(process_id: uuid.UUID | str, lease: Lease) -> None:
    """The run moved on within a step that runs again (a run of it committed): recoveries counted at that
    step were not in a row, so they start over. In the caller's transaction, committed with that run."""
    ProcessLease.objects.filter(process_id=process_id, owner=lease.owner, recoveries__gt=0).update(recoveries=0)


@dataclass(frozen=True)
class Claim:
    """What a run got when it asked for a process: `ok` to run it; or `give_up`, why the process must be
    failed (the run holds it and fails it); or neither, nothing to do (another run has it, or it is not
    running)."""

    ok: bool
    give_up: str | None = None


def claim(process_id: uuid.UUID | str, lease: Lease) -> Claim:
    """Take the process for this run, if no other live run has it.

    Taken when its run record is queued, or this run's own (made at creation for this thread), or absent,
    or when its lease lapsed and no step of it is in progress (its run died: a recovery is counted). Not
    taken while a step holds the row (waited for LOCK_WAIT_SECONDS) or another run's lease is live.
    Every writer of a run record that decides from what it read does so under the process row's lock,
    as here: the record itself needs no lock of its own.
    """
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:  # for this transaction only; it ends with the claim
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [_lock_timeout()])
            row = (Process.objects.select_for_update(of=("self",)).filter(pk=process_id)
                   .values_list("status", "current_step", "lease__owner", "lease__expires_at", "lease__position",
                                "lease__recoveries", "lease__last_error").first())
            return _claim_locked(process_id, lease, row)
    except DatabaseError as exc:
        if connection_lost(exc) or not lock_timed_out(exc):
            raise
        return Claim(False)  # a step of it is in progress right now: its run is alive


def _claim_locked(process_id: uuid.UUID | str, lease: Lease, row: tuple | None) -> Claim:
    if row is None:
        return Claim(False)
    status, current_step, owner, expires_at, position, recoveries, last_error = row
    now = timezone.now()
    records = ProcessLease.objects.filter(process_id=process_id)
    if status != ProcessStatus.RUNNING:
        if owner is not None and (not owner or expires_at < now):
            records.delete()  # a hand-over left from before it stopped running
        return Claim(False)
    if owner is None:
        ProcessLease.objects.create(process_id=process_id, owner=lease.owner, expires_at=lease.renewed(),
                                    queued_at=now, position=current_step)
        lease.mark_renewed()
        return Claim(True)
    record = ProcessLease(process_id=process_id, owner=owner, expires_at=expires_at, position=position,
                          recoveries=recoveries, last_error=last_error)
    give_up = None
    if owner and owner != lease.owner:
        if expires_at >= now:
            return Claim(False)  # a live run holds it (a duplicate or redelivered message)
        give_up = count_recovery(record, current_step)
        logger.warning("process %s: its run %s died (lease lapsed at %s); taken over (recovery %d)",
                       process_id, owner, expires_at, record.recoveries)
    records.update(owner=lease.owner, expires_at=lease.renewed(), position=current_step,
                   recoveries=record.recoveries)
    lease.mark_renewed()
    return Claim(give_up is None, give_up)


def _lock_timeout() -> str:
    return f"{max(int(float(orchestrator_setting('LOCK_WAIT_SECONDS')) * 1000), 1)}ms"


def release(process_id: uuid.UUID | str, lease: Lease) -> None:
    """Let the process go (only if this run still holds it)."""
    ProcessLease.objects.filter(process_id=process_id, owner=lease.owner).delete()


def queue(process_id: uuid.UUID | str, *, resends: int = 0, fresh: bool = False,
          now: datetime | None = None) -> ProcessLease:
    """Record that the process is (about to be) handed to the executor: a queued run record, in the
    caller's transaction. A run of the executor takes it; if none does within resend_delay(), the
    recovery sweep hands it over again.

    `fresh` (a person retried, resumed or skipped): the counts and errors of earlier runs are forgotten;
    otherwise (a recovery) they are kept.
    """
    now = now or timezone.now()
    defaults: dict[str, object] = {"owner": "", "expires_at": now + resend_delay(resends), "queued_at": now,
                                   "resends": resends}
    if fresh:
        defaults.update(recoveries=0, last_error="", abort_requested_at=None, abort_requested_by="",
                        abort_reason="")
    record, _ = ProcessLease.objects.update_or_create(process_id=process_id, defaults=defaults)
    return record


def note_error(process_id: uuid.UUID | str, error: object, *, resend_now: bool = False) -> None:
    """Best effort: remember an infrastructure error on the process's run record (for the give-up reason and
    for operators). With `resend_now`, a first hand-over that failed is due again at the next sweep; later
    ones keep their backoff (a broker that stays down is not hammered every tick)."""
    fields: dict[str, object] = {"last_error": storable_text(error, 2000)}
    if resend_now:
        fields["expires_at"] = Case(When(resends=0, owner="", then=Value(timezone.now())), default=F("expires_at"))
    try:
        ProcessLease.objects.filter(process_id=process_id).update(**fields)
    except DatabaseError as exc:
        logger.warning("process %s: could not note %r on its run record: %s", process_id, error, exc)
