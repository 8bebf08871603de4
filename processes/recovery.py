"""Recovery: retrying waiting processes when due, and handing processes that no live run holds back to
the executor (a run that died, a hand-over that was lost, a pause that ended). Called by the scheduler's
tick (processes/scheduler.py) and when the engine is resumed; any number of schedulers may run it at once.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import OrchestratorError
from processes import engine, leases, operations
from processes.dberrors import connection_lost, storable_text
from processes.errors import EnginePaused, ExecutorUnavailable
from processes.executors import submit_after_commit
from processes.models import ABORTABLE, Process, ProcessLease, ProcessStatus, ProcessStep, StepStatus
from processes.statelog import no_change

# Who starts scheduled tasks and retries waiting processes, in the log and the process's created_by.
SCHEDULER_ACTOR = "scheduler"

logger = logging.getLogger(__name__)


def retry_due_processes(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Retry the waiting processes whose next try is due; return their ids.

    Each is claimed under a row lock that skips rows another scheduler holds, so two schedulers never
    retry one process twice. One that cannot be retried (its workflow changed or left the code, or the
    retry raised) is failed with the reason, and the others are retried all the same: one bad process
    never holds up the rest. When the executor is unreachable or the engine paused, the remaining ones
    wait for the next tick (they are due still).
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []
    retried: list[uuid.UUID] = []
    due = list(
        # A waiting process without a failure waits for a timer: wake_due_timers' part.
        Process.objects.filter(status=ProcessStatus.WAITING, next_retry_at__lte=now).exclude(failed_reason="")
        .order_by("next_retry_at")
        .values_list("process_id", flat=True)[:limit]
    )
    for process_id in due:
        try:
            with transaction.atomic():
                claimed = (
                    Process.objects.select_for_update(skip_locked=True)
                    .filter(pk=process_id, status=ProcessStatus.WAITING, next_retry_at__lte=now)
                    .exists()
                )
                if not claimed:
                    continue
                operations.retry(process_id, by=SCHEDULER_ACTOR)
                submit_after_commit(process_id)
        except (ExecutorUnavailable, EnginePaused) as exc:
            logger.warning("automatic retries wait for the next tick: %s", exc)
            break
        except Exception as exc:
            if isinstance(exc, DatabaseError) and connection_lost(exc):
                raise  # the database is gone: nothing else can be done on this tick
            if not isinstance(exc, OrchestratorError):
                logger.exception("process %s: its automatic retry raised", process_id)
            _stop_retrying(process_id, exc)
            continue
        retried.append(process_id)
        logger.info("process %s: automatic retry of its waiting step", process_id)
    return retried


def wake_due_timers(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Wake the processes whose timer ended (at `now` or before): each goes on with the step after its timer,
    handed to the executor. Never before its moment; each under a row lock that skips rows another scheduler
    holds, so none is woken twice. Nothing is woken while the engine is paused (they stay due)."""
    now = now or timezone.now()
    if engine.engine_paused():
        return []
    due = list(Process.objects.filter(status=ProcessStatus.WAITING, failed_reason="", next_retry_at__lte=now)
               .order_by("next_retry_at").values_list("process_id", flat=True)[:limit])
    woken: list[uuid.UUID] = []
    for process_id in due:
        try:
            with transaction.atomic():
                locked = (Process.objects.select_for_update(skip_locked=True)
                          .filter(pk=process_id, status=ProcessStatus.WAITING, failed_reason="", next_retry_at__lte=now)
                          .exists())
                if not locked or not operations.wake(process_id):
                    continue
                submit_after_commit(process_id)
        except (ExecutorUnavailable, EnginePaused) as exc:
            logger.warning("timers wait for the next tick: %s", exc)
            break
        woken.append(process_id)
        logger.info("process %s: its timer ended; it goes on", process_id)
    return woken


def _stop_retrying(process_id: uuid.UUID, exc: BaseException) -> None:
    """A waiting process whose automatic retry is refused or raised: failed, with why, in its log."""
    reason = storable_text(f"automatic retry not possible: {engine.describe(exc)}", 4000)
    try:
        with transaction.atomic():
            process = engine.get_process(process_id, lock=True)
            if process.status != ProcessStatus.WAITING:
                return
            now = timezone.now()
            ProcessStep.objects.create(
                process=process, name=process.last_step or "Automatic retry", status=StepStatus.FAILED,
                state=engine.current_state(process), delta=no_change(), error=reason, error_type=type(exc).__qualname__,
                created_by=SCHEDULER_ACTOR, started_at=now, completed_at=now, attempt=process.current_attempt,
            )
            process.stop_waiting(reason)
            process.last_modified_at = now
            process.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "last_modified_at"])
        logger.error("process %s: %s", process_id, reason)
    except Exception:
        logger.exception("process %s: could not record that its automatic retry is not possible", process_id)


def _in_need_of_a_run(now: datetime, grace: datetime | None, limit: int) -> list[uuid.UUID]:
    """Processes that should be running and that no live run (nor a hand-over still fresh) holds.

    Running ones whose run record lapsed (a dead run, or a hand-over nobody took), or that have none; ones
    left `created` or `resumed`; and unfinished ones with an abort request no run carried out. Without a run
    record, only once their last change is older than `grace` (a start committing right now). Rows locked by
    a step in progress are left out later.
    """
    live = ProcessLease.objects.filter(process=OuterRef("pk"), expires_at__gte=now)
    any_record = ProcessLease.objects.filter(process=OuterRef("pk"))
    candidates = Process.objects.exclude(Exists(live))
    running = Q(status=ProcessStatus.RUNNING) & (Q(Exists(any_record)) | Q(last_modified_at__lt=grace or now))
    stranded = Q(status__in=[ProcessStatus.CREATED, ProcessStatus.RESUMED], last_modified_at__lt=grace or now)
    # An abort asked for while a step ran that then left the process waiting, the request landing just after
    # the step let its run record go (the request then makes a record of its own): aborted here.
    asked = Q(status__in=ABORTABLE) & Q(Exists(ProcessLease.objects.filter(process=OuterRef("pk"),
                                                                           abort_requested_at__isnull=False)))
    return list(candidates.filter(running | stranded | asked).order_by("last_modified_at")
                .values_list("process_id", flat=True)[:limit])


def _hand_back(process_id: uuid.UUID, now: datetime, why: str) -> str | None:
    """Give one process that no live run holds to the executor again; return what was done (or None).

    Under the process row's lock, taken with SKIP LOCKED: a row that cannot be taken has a step in
    progress, so its run is alive however old its lease (the proof of life; nothing is handed over).
    """
    with transaction.atomic():
        locked = (Process.objects.select_for_update(skip_locked=True, of=("self",)).select_related("workflow")
                  .filter(pk=process_id).first())
        if locked is None:
            return None  # a step of it is in progress (or it is gone)
        record = ProcessLease.objects.select_for_update().filter(process_id=process_id).first()
        if record is not None and record.expires_at >= now:
            return None  # someone claimed or handed it over meanwhile
        if record is not None and record.abort_requested_at is not None and locked.status in ABORTABLE:
            engine.abort_locked(locked, record.abort_requested_by or "?", record.abort_reason)
            return "aborted as asked while its step ran"
        if locked.status in (ProcessStatus.CREATED, ProcessStatus.RESUMED):
            locked.run()  # the transition it was left before
            locked.last_modified_at = now
            locked.save(update_fields=["status", "last_modified_at"])
            leases.queue(process_id, now=now)
            what = "handed over: it was left created or resumed, with no run"
        elif locked.status != ProcessStatus.RUNNING:
            if record is not None:
                record.delete()
            return None
        elif record is None:
            leases.queue(process_id, resends=1, now=now)
            what = "handed over: running with no run holding it"
        elif record.queued:
            limit = int(orchestrator_setting("RESEND_MAX_TIMES"))
            if record.resends >= limit:
                queued = f"{record.queued_at:%Y-%m-%d %H:%M:%S %Z}"
                last = f"; last error: {record.last_error}" if record.last_error else ""
                engine.fail_running(process_id, (
                    f"no worker took it: handed to the executor {record.resends + 1} times since {queued}{last}. "
                    f"Check that workers run and reach the broker, then retry the process"
                ), error_type="NotHandedOver")
                return "failed: no worker took it"
            record.resends += 1
            record.expires_at = now + leases.resend_delay(record.resends)
            record.save(update_fields=["resends", "expires_at"])
            what = f"handed over again: no worker took it yet (resend {record.resends})"
        else:
            give_up = leases.count_recovery(record, locked.current_step)
            if give_up:
                record.save()
                engine.fail_running(process_id, give_up, error_type="RunStopped")
                return "failed: its run kept stopping at one step"
            dead = record.owner
            record.owner, record.resends, record.queued_at = "", 0, now
            record.expires_at = now + leases.resend_delay(0)
            record.save()
            what = f"recovered: its run {dead} stopped without finishing (recovery {record.recoveries})"
        submit_after_commit(process_id)
    logger.info("process %s %s (%s)", process_id, what, why)
    return what


HAND_BACK_LIMIT = 100


def recover_stalled_processes(now: datetime | None = None, *, limit: int = HAND_BACK_LIMIT) -> list[uuid.UUID]:
    """Hand processes whose run died, or whose hand-over was lost, to the executor again; return their ids.

    - Queued, never claimed: handed over again only when its resend time came (RESEND_AFTER_SECONDS,
      doubling), counted; failed after RESEND_MAX_TIMES, saying no worker took it.
    - Claimed, lease lapsed, and no step in progress (its row lock is free): its run died; handed over at
      once, counting a recovery at that step; failed after RECOVERY_MAX_TIMES in a row at one step.
    - Running without any run record, or left `created`/`resumed`: handed over once their last change is
      older than a lease.
    One process that cannot be handed over is logged and does not stop the others.
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []  # a paused engine's processes wait, without a run, for the engine to resume
    grace = now - timedelta(seconds=float(orchestrator_setting("LEASE_SECONDS")))
    return _hand_back_all(_in_need_of_a_run(now, grace, limit), now, "recovery sweep")


def continue_paused_processes(*, limit: int = 1000) -> list[uuid.UUID]:
    """After the engine resumes: hand back every running process that stopped at a step boundary.

    The same checks as the recovery sweep: a process with a step still in progress (a long step that
    outlived the pause) is left to its run, never handed to a second one.
    """
    if engine.engine_paused():
        return []
    now = timezone.now()
    return _hand_back_all(_in_need_of_a_run(now, now, limit), now, "the engine was resumed")


def _hand_back_all(process_ids: list[uuid.UUID], now: datetime, why: str) -> list[uuid.UUID]:
    handed: list[uuid.UUID] = []
    for process_id in process_ids:
        try:
            if _hand_back(process_id, now, why) is not None:
                handed.append(process_id)
        except Exception as exc:  # one process that cannot be handed over must not stop the others
            if isinstance(exc, DatabaseError) and connection_lost(exc):
                raise
            logger.exception("process %s: could not hand it to the executor", process_id)
    return handed
