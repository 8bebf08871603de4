"""Periodic work of the engine: retrying waiting processes when due, waking timers, failing callback steps
past their deadline, recovering stalled running ones, starting scheduled tasks, sending the notifications of
failures still to send (and folding the status counts, and noting the tick: processes/scheduler_ticks.py).
`tick()` does all of it; every scheduler calls it every SWEEP_INTERVAL_SECONDS: `manage.py run_scheduler`,
Celery beat (task processes.scheduler_tick) or the embedded scheduler thread (processes/scheduler_thread.py).
Any number of them may tick at once: none does a piece of work twice.
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
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import OrchestratorError
from processes import engine
from processes.callbacks import fail_overdue
from processes.dberrors import connection_lost
from processes.joins import sweep as joins_sweep
from processes.models import ProcessStatus, ScheduledRun
from processes.notify_send import send_due as send_due_notifications
from processes.recovery import SCHEDULER_ACTOR, recover_stalled_processes, retry_due_processes, wake_due_timers
from processes.scheduler_ticks import record_tick
from processes.services import start_process
from processes.status_counts import fold as fold_status_counts
from workflows.errors import WorkflowNotStartable
from workflows.registry import all_workflows

logger = logging.getLogger(__name__)


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


def start_due_tasks(now: datetime | None = None, *, failures: list[str] | None = None) -> list[uuid.UUID]:
    """Start each scheduled task not yet started in its current period; return the processes started.

    The ScheduledRun row for (task, period) is inserted in the same transaction as the task's process: of
    several schedulers, the first to insert it starts the task; another's insert fails on the unique
    constraint (waiting for the first to commit, on PostgreSQL) and it skips the task. A start that is
    refused rolls the row back with it, so the next tick tries again; while the engine is paused nothing
    is started (and the period's run happens once it resumes). A task whose start raised unexpectedly is
    logged (and added to `failures`) and the tasks after it are still started.
    """
    now = now or timezone.now()
    failures = failures if failures is not None else []
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
        except WorkflowNotStartable as exc:
            # Its start predicate says no (the last run has not finished): this period's run is skipped,
            # recorded as done without a process, instead of being tried again at every tick.
            ScheduledRun.objects.get_or_create(task=schedule.task, period_start=period)
            logger.warning("scheduled task %s (%s): period from %s skipped: %s", schedule.task, schedule.text,
                           period, exc)
            continue
        except OrchestratorError as exc:
            logger.warning("scheduled task %s (%s): not started, will try again: %s", schedule.task, schedule.text, exc)
            continue
        except Exception as exc:
            # Unexpected, but one task must not keep the tasks after it from starting.
            if isinstance(exc, DatabaseError) and connection_lost(exc):
                raise
            logger.exception("scheduled task %s (%s): starting it raised; will try again", schedule.task,
                             schedule.text)
            failures.append(f"{schedule.task}: {type(exc).__name__}: {exc}")
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
    woken: list[uuid.UUID] = field(default_factory=list)
    expired: list[uuid.UUID] = field(default_factory=list)
    # Parents woken (or children aborted) by the joins' sweep: a join or a cascade that was missed.
    joined: list[uuid.UUID] = field(default_factory=list)
    # Notifications of failures sent by this tick (ids; see processes/notify_send.py).
    notified: list[int] = field(default_factory=list)
    # The parts that raised (logged with their traceback); the others still ran.
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"retried {len(self.retried)} waiting process(es), recovered {len(self.recovered)} stalled "
                f"one(s), started {len(self.started)} scheduled task(s), woke {len(self.woken)} timer(s), failed "
                f"{len(self.expired)} callback(s) past their deadline, mended {len(self.joined)} join(s), sent "
                f"{len(self.notified)} notification(s)")
        return text + (f"; failed: {', '.join(self.failed)}" if self.failed else "")


def tick(now: datetime | None = None) -> TickReport:
    """All of the scheduler's periodic work, once: retries due, recovery of stalled runs, scheduled tasks.

    One part that raises is logged and does not stop the others.
    """
    now = now or timezone.now()
    report = TickReport()
    task_failures: list[str] = []
    parts = (("retried", retry_due_processes), ("woken", wake_due_timers),
             ("expired", lambda when: fail_overdue(when, who=SCHEDULER_ACTOR)),
             ("recovered", recover_stalled_processes),
             ("joined", joins_sweep),
             ("started", lambda when: start_due_tasks(when, failures=task_failures)),
             # Last: a receiver that is slow to answer delays no other part (and it sends the failures above).
             ("notified", send_due_notifications))
    for name, job in parts:
        try:
            setattr(report, name, job(now))
        except Exception:
            label = getattr(job, "__name__", name)
            if label == "<lambda>":
                label = {"expired": "fail_overdue", "started": "start_due_tasks"}[name]
            logger.exception("scheduler: %s failed", label)
            report.failed.append(label)
    report.failed += [f"start_due_tasks ({failure})" for failure in task_failures]
    try:
        # Housekeeping, not reported: keeps the status counts a read of a few rows (processes.status_counts).
        fold_status_counts(more_than=len(ProcessStatus.values))
    except Exception:
        logger.exception("scheduler: folding the status counts failed")
    try:
        # The heartbeat the health check and /metrics read: one row updated, after the work (a tick that
        # hangs in a part does not count as a tick).
        record_tick(failed_parts=len(report.failed))
    except Exception:
        logger.exception("scheduler: recording the tick failed")
    return report
