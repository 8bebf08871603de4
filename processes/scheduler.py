"""Periodic work of the engine: retrying waiting processes when due, recovering stalled running ones, and
starting scheduled tasks. `tick()` does all of it; every scheduler calls it every SWEEP_INTERVAL_SECONDS:
`manage.py run_scheduler`, Celery beat (task processes.scheduler_tick) or the embedded scheduler thread
(processes/scheduler_thread.py). Any number of them may tick at once: none does a piece of work twice.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import OrchestratorError
from processes import engine
from processes.executors import get_executor, submit_after_commit
from processes.models import Process, ProcessLease, ProcessStatus, ScheduledRun
from processes.services import start_process
from workflows.registry import all_workflows

# Who starts scheduled tasks and retries waiting processes, in the log and the process's created_by.
SCHEDULER_ACTOR = "scheduler"

logger = logging.getLogger(__name__)


def retry_due_processes(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Retry the waiting processes whose next try is due; return their ids.

    Each is claimed under a row lock that skips rows another scheduler holds, so two schedulers never
    retry one process twice.
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []
    retried: list[uuid.UUID] = []
    due = list(
        Process.objects.filter(status=ProcessStatus.WAITING, next_retry_at__lte=now)
        .order_by("next_retry_at")
        .values_list("process_id", flat=True)[:limit]
    )
    for process_id in due:
        with transaction.atomic():
            claimed = (
                Process.objects.select_for_update(skip_locked=True)
                .filter(pk=process_id, status=ProcessStatus.WAITING, next_retry_at__lte=now)
                .exists()
            )
            if not claimed:
                continue
            engine.retry(process_id, by=SCHEDULER_ACTOR)
            submit_after_commit(process_id)
        retried.append(process_id)
        logger.info("process %s: automatic retry of its waiting step", process_id)
    return retried


def _unleased_running(now: datetime) -> object:
    """Running processes no live run holds: no lease, or one that lapsed."""
    live = ProcessLease.objects.filter(process=OuterRef("pk"), expires_at__gte=now)
    return Process.objects.filter(status=ProcessStatus.RUNNING).exclude(Exists(live))


def recover_stalled_processes(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Hand running processes whose run died (its lease lapsed) back to the executor; return their ids.

    A process is only taken once its last change is older than a lease, so one just created and still
    waiting in a queue for its first worker is left to that worker. The executor's run claims the lease
    first: of two sweeps (or a sweep and a late worker) only one runs it.
    """
    now = now or timezone.now()
    if engine.engine_paused():
        return []  # a paused engine's processes wait, without a run, for the engine to resume
    grace = now - timedelta(seconds=float(orchestrator_setting("LEASE_SECONDS")))
    stalled = list(
        _unleased_running(now).filter(last_modified_at__lt=grace)
        .order_by("last_modified_at").values_list("process_id", flat=True)[:limit]
    )
    _submit(stalled, "recovered: its run stopped without finishing (lease lapsed)")
    return stalled


def continue_paused_processes(*, limit: int = 1000) -> list[uuid.UUID]:
    """After the engine resumes: hand back every running process that stopped at a step boundary."""
    if engine.engine_paused():
        return []
    waiting = list(_unleased_running(timezone.now()).order_by("last_modified_at")
                   .values_list("process_id", flat=True)[:limit])
    _submit(waiting, "continues: the engine was resumed")
    return waiting


def _submit(process_ids: list[uuid.UUID], why: str) -> None:
    executor = get_executor()
    for process_id in process_ids:
        logger.info("process %s %s", process_id, why)
        try:
            executor.submit(process_id)
        except Exception:  # one process that cannot be handed over must not stop the others
            logger.exception("process %s: could not hand it to the executor", process_id)


# --- scheduled tasks ---------------------------------------------------------------------------------
_DAILY = re.compile(r"daily\s+(\d{1,2}):(\d{2})", re.IGNORECASE)
_EVERY = re.compile(r"every\s+(\d+)\s+minutes?", re.IGNORECASE)
_OFF = {"", "off", "never"}


@dataclass(frozen=True)
class Schedule:
    """When one task runs: daily at a local time, or every N minutes (periods counted from midnight UTC)."""

    task: str
    text: str
    daily_at: time | None = None
    every_minutes: int | None = None

    def period_start(self, now: datetime) -> datetime:
        """The start of the period `now` falls in (in UTC): the task runs once per period."""
        if self.every_minutes is not None:
            seconds = self.every_minutes * 60
            return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=UTC)
        assert self.daily_at is not None
        zone = timezone.get_current_timezone()
        today = timezone.localtime(now, zone).date()
        start = datetime.combine(today, self.daily_at, tzinfo=zone)
        if start > now:
            start = datetime.combine(today - timedelta(days=1), self.daily_at, tzinfo=zone)
        return start.astimezone(UTC)


def parse_schedule_entry(task: str, text: Any) -> Schedule | None:
    """One ORCHESTRATOR["SCHEDULE"] value: "daily HH:MM" or "every N minutes"; None or "off": not scheduled."""
    where = f'ORCHESTRATOR["SCHEDULE"][{task!r}]'
    if text is None or (isinstance(text, str) and text.strip().lower() in _OFF):
        return None
    if not isinstance(text, str):
        raise ImproperlyConfigured(f'{where} must be a string such as "daily 02:00" or "every 10 minutes", '
                                   f"not {text!r}")
    cleaned = " ".join(text.split())
    daily = _DAILY.fullmatch(cleaned)
    if daily:
        hour, minute = int(daily[1]), int(daily[2])
        if hour > 23 or minute > 59:
            raise ImproperlyConfigured(f"{where} = {text!r}: no such time of day (00:00 to 23:59)")
        return Schedule(task, cleaned, daily_at=time(hour, minute))
    every = _EVERY.fullmatch(cleaned)
    if every:
        minutes = int(every[1])
        if not 1 <= minutes <= 24 * 60:
            raise ImproperlyConfigured(f"{where} = {text!r}: N must be from 1 to 1440 minutes")
        return Schedule(task, cleaned, every_minutes=minutes)
    raise ImproperlyConfigured(
        f'{where} = {text!r} is not a schedule: write "daily HH:MM" (in TIME_ZONE) or "every N minutes", '
        f'or "off"'
    )


def parse_schedule(config: Any = None) -> list[Schedule]:
    """ORCHESTRATOR["SCHEDULE"] (or `config`), checked: every name a task, every value a schedule.

    Also accepts the environment's form, "task=daily 02:00;other_task=every 30 minutes".
    """
    raw = orchestrator_setting("SCHEDULE") if config is None else config
    if isinstance(raw, str):
        entries: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in raw.split(";"))):
            name, sep, text = item.partition("=")
            if not sep or not name.strip():
                raise ImproperlyConfigured(
                    f'ORCHESTRATOR["SCHEDULE"] = {raw!r}: write "task=schedule;task=schedule", '
                    f'e.g. "task_clean_up_tasks=daily 03:00"'
                )
            entries[name.strip()] = text.strip()
        raw = entries
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f'ORCHESTRATOR["SCHEDULE"] must be a dict of task name to schedule, not {type(raw).__name__}'
        )
    workflows = all_workflows()
    tasks = sorted(name for name, spec in workflows.items() if spec.is_task)
    schedules: list[Schedule] = []
    for name, text in raw.items():
        spec = workflows.get(name)
        if spec is None or not spec.is_task:
            what = "a workflow, not a task" if spec is not None else "not a known task"
            raise ImproperlyConfigured(
                f'ORCHESTRATOR["SCHEDULE"]: {name!r} is {what}; tasks that can be scheduled: {", ".join(tasks)}'
            )
        schedule = parse_schedule_entry(name, text)
        if schedule is not None:
            schedules.append(schedule)
    return schedules


def start_due_tasks(now: datetime | None = None) -> list[uuid.UUID]:
    """Start each scheduled task not yet started in its current period; return the processes started.

    The ScheduledRun row for (task, period) is inserted in the same transaction as the task's process: of
    several schedulers, the first to insert it starts the task; another's insert fails on the unique
    constraint (waiting for the first to commit, on PostgreSQL) and it skips the task. A start that is
    refused rolls the row back with it, so the next tick tries again; while the engine is paused nothing
    is started (and the period's run happens once it resumes).
    """
    now = now or timezone.now()
    schedules = parse_schedule()
    if not schedules or engine.engine_paused():
        return []
    started: list[uuid.UUID] = []
    for schedule in schedules:
        period = schedule.period_start(now)
        if ScheduledRun.objects.filter(task=schedule.task, period_start=period).exists():
            continue
        try:
            with transaction.atomic():
                run = ScheduledRun.objects.create(task=schedule.task, period_start=period)
                process = start_process(schedule.task, by=SCHEDULER_ACTOR)
                run.process_id = process.process_id
                run.save(update_fields=["process"])
        except IntegrityError:
            logger.info("scheduled task %s (%s): another scheduler started it for the period from %s",
                        schedule.task, schedule.text, period)
            continue
        except OrchestratorError as exc:
            logger.warning("scheduled task %s (%s): not started, will try again: %s", schedule.task, schedule.text, exc)
            continue
        logger.info("process %s: scheduled task %s started (%s, period from %s)",
                    process.process_id, schedule.task, schedule.text, period)
        started.append(process.process_id)
    return started


@dataclass
class TickReport:
    retried: list[uuid.UUID] = field(default_factory=list)
    recovered: list[uuid.UUID] = field(default_factory=list)
    started: list[uuid.UUID] = field(default_factory=list)
    # The parts that raised (logged with their traceback); the others still ran.
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"retried {len(self.retried)} waiting process(es), recovered {len(self.recovered)} stalled "
                f"one(s), started {len(self.started)} scheduled task(s)")
        return text + (f"; failed: {', '.join(self.failed)}" if self.failed else "")


def tick(now: datetime | None = None) -> TickReport:
    """All of the scheduler's periodic work, once: retries due, recovery of stalled runs, scheduled tasks.

    One part that raises is logged and does not stop the others.
    """
    now = now or timezone.now()
    report = TickReport()
    parts = (("retried", retry_due_processes), ("recovered", recover_stalled_processes),
             ("started", start_due_tasks))
    for name, job in parts:
        try:
            setattr(report, name, job(now))
        except Exception:
            logger.exception("scheduler: %s failed", job.__name__)
            report.failed.append(job.__name__)
    return report
