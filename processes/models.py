"""Processes (running workflows), their step log, their subscriptions, their inputs, and engine settings."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from subscriptions.models import Subscription
from workflows.models import Workflow


class ProcessStatus(models.TextChoices):
    CREATED = "created", "created"
    RUNNING = "running", "running"
    SUSPENDED = "suspended", "suspended"
    WAITING = "waiting", "waiting"
    AWAITING_CALLBACK = "awaiting_callback", "awaiting callback"
    # Its sub-processes step started child processes; it goes on when every one of them has ended.
    AWAITING_CHILDREN = "awaiting_children", "awaiting children"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    ABORTED = "aborted", "aborted"
    API_UNAVAILABLE = "api_unavailable", "API unavailable"
    INCONSISTENT_DATA = "inconsistent_data", "inconsistent data"
    RESUMED = "resumed", "resumed"


class StepStatus(models.TextChoices):
    SUCCESS = "success", "success"
    SKIPPED = "skipped", "skipped"
    SUSPEND = "suspend", "suspend"
    WAITING = "waiting", "waiting"
    AWAITING_CALLBACK = "awaiting_callback", "awaiting callback"
    CALLBACK = "callback", "callback received"
    AWAITING_CHILDREN = "awaiting_children", "children started"
    FAILED = "failed", "failed"
    ABORT = "abort", "abort"
    COMPLETE = "complete", "complete"


P = ProcessStatus
# Statuses a process can be retried or resumed from, and those in which it is finished for good.
RETRYABLE = [P.FAILED, P.WAITING, P.API_UNAVAILABLE, P.INCONSISTENT_DATA]
FINISHED = [P.COMPLETED, P.ABORTED]
ABORTABLE = [s for s in P if s not in FINISHED]


class Process(FSMModelMixin, models.Model):
    """One run of a workflow. Its status changes only through the transitions below, made by the engine."""

    process_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed through process_workflow_started (workflow first), which also lists a workflow's processes in order.
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="processes", db_index=False)
    # Indexed through process_status_retry (status first); a second index would only slow every write.
    status = FSMField(max_length=20, choices=ProcessStatus.choices, default=P.CREATED, protected=True)
    # Position in the workflow's step list of the next step to run (or the one failed, suspended...).
    current_step = models.PositiveIntegerField(default=0)
    # Which try of the current step this is (1 for the first run, 2 for the first retry...).
    current_attempt = models.PositiveIntegerField(default=1)
    last_step = models.CharField(max_length=200, blank=True)
    failed_reason = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_by = models.CharField(max_length=150)
    # Who the steps now run for: the creator, then whoever last retried or resumed the process. Step
    # rows and lifecycle changes record this name.
    acting_user = models.CharField(max_length=150, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_modified_at = models.DateTimeField(default=timezone.now)
    is_task = models.BooleanField(default=False, db_index=True)
    note = models.TextField(blank=True)
    # The step names of the workflow when the process started: a retry after the workflow changed
    # incompatibly is refused instead of running the wrong step.
    workflow_version = models.JSONField(default=list)
    # When the scheduler's sweep acts on this process next: a waiting process's next automatic try (a failed
    # retrystep) or the moment its timer ends; an awaiting process's callback deadline.
    next_retry_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # last_modified_at of a process that is not running, kept by a PostgreSQL trigger (migration 0009; NULL
    # on SQLite); never written by the code. Indexed where last_modified_at cannot be: every step of a
    # running process updates last_modified_at, and an index on it would make each of those updates
    # rewrite every index of the table (no HOT update). This one changes only when a process stops or is
    # touched while not running. processes.recently_modified orders the list by last_modified_at with it.
    settled_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A child process (processes.joins): the parent whose sub-processes step (at position `parent_step`)
    # started it for item `child_index` of its list. `child_round` counts the children made for one item:
    # 1, and one more each time a retry of the parent replaces an aborted child. Unique together, so one
    # item never has two children of one round, whatever crashes and retries happen.
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children",
                               db_index=False)
    parent_step = models.PositiveIntegerField(null=True, blank=True)
    child_index = models.PositiveIntegerField(null=True, blank=True)
    child_round = models.PositiveSmallIntegerField(db_default=1)  # the engine's SQL insert leaves it out
    # A child's result for its parent, written in the child's final transaction (its final state, less
    # the engine's own keys); the parent's join reads these instead of rebuilding every child's log.
    result = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-started_at"]
        verbose_name_plural = "processes"  # not Django's "processs"
        permissions = [("run_process", "Can start, resume, retry and abort processes")]
        indexes = [
            models.Index(fields=["status", "next_retry_at"], name="process_status_retry"),
            # The list filtered by status, newest first (the admin's and the API's default order).
            models.Index(fields=["status", "-started_at"], name="process_status_started"),
            # Filtering by who started it, and the admin's list of names (a loose index scan).
            models.Index(fields=["created_by", "-started_at"], name="process_creator_started"),
            # Filtering by workflow (and the search's workflow part), newest first.
            models.Index(fields=["workflow", "-started_at"], name="process_workflow_started"),
            # Ordering by last_modified_at (not indexed itself: see settled_at).
            models.Index(fields=["-settled_at"], name="process_settled"),
            # A parent's children in item order (the join counts them, the detail page lists them).
            models.Index(fields=["parent", "parent_step", "child_index"], name="process_children",
                          condition=models.Q(parent__isnull=False)),
            # A step's unfinished children only: each child's join asks whether any is left, which on the
            # index above meant stepping over every finished sibling first (quadratic in a large fan-out).
            models.Index(fields=["parent", "parent_step"], name="process_unfinished_children",
                          condition=models.Q(parent__isnull=False) & ~models.Q(status__in=FINISHED)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["parent", "parent_step", "child_index", "child_round"],
                                    name="unique_child_per_item", condition=models.Q(parent__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.name} {self.process_id}"

    @property
    def short_id(self) -> str:
        return str(self.process_id)[:8] + "…"

    # --- transitions (made by the engine only; each goes with a step row in the log) ------------
    @transition(field=status, source=[P.CREATED, P.RESUMED], target=P.RUNNING)
    def run(self) -> None:
        """Start or continue running steps."""

    @transition(field=status, source=P.RUNNING, target=P.COMPLETED)
    def complete(self) -> None:
        self.failed_reason = ""
        self.traceback = ""

    @transition(field=status, source=P.RUNNING, target=P.FAILED)
    def fail(self, reason: str, traceback: str = "") -> None:
        self.failed_reason = reason
        self.traceback = traceback

    @transition(field=status, source=P.RUNNING, target=P.WAITING)
    def wait(self, reason: str, traceback: str, retry_at: Any) -> None:
        self.failed_reason = reason
        self.traceback = traceback
        self.next_retry_at = retry_at

    @transition(field=status, source=P.RUNNING, target=P.SUSPENDED)
    def suspend(self) -> None:
        """Wait for user input."""

    @transition(field=status, source=P.RUNNING, target=P.AWAITING_CALLBACK)
    def await_callback(self, deadline: Any) -> None:
        """Wait for an external system to call back, until `deadline`."""
        self.next_retry_at = deadline

    @transition(field=status, source=P.RUNNING, target=P.WAITING)
    def sleep(self, until: Any) -> None:
        """Wait for a moment (a timer step): no failure, woken by the sweep at `until`."""
        self.failed_reason = ""
        self.traceback = ""
        self.next_retry_at = until

    @transition(field=status, source=P.RUNNING, target=P.AWAITING_CHILDREN)
    def await_children(self) -> None:
        """Its sub-processes step started children: it waits, holding no worker, until all have ended."""
        self.next_retry_at = None

    @transition(field=status, source=P.AWAITING_CHILDREN, target=P.FAILED)
    def children_aborted(self, reason: str) -> None:
        """A child it waited for was aborted: it cannot go on with that child's result (processes.joins)."""
        self.failed_reason = reason
        self.traceback = ""
        self.next_retry_at = None

    @transition(field=status, source=P.AWAITING_CALLBACK, target=P.FAILED)
    def miss_callback(self, reason: str) -> None:
        """No callback came before the deadline (or it came too late)."""
        self.failed_reason = reason
        self.traceback = ""
        self.next_retry_at = None

    @transition(field=status, source=P.WAITING, target=P.FAILED)
    def stop_waiting(self, reason: str, traceback: str = "") -> None:
        """Give up on a waiting process's automatic retries (refused, or they cannot be made)."""
        self.failed_reason = reason
        self.traceback = traceback
        self.next_retry_at = None

    @transition(field=status, source=[*RETRYABLE, P.SUSPENDED, P.AWAITING_CALLBACK, P.AWAITING_CHILDREN],
                target=P.RESUMED)
    def resume(self) -> None:
        # The process runs again: its row no longer shows the old failure (the failed step rows keep it).
        self.next_retry_at = None
        self.failed_reason = ""
        self.traceback = ""

    @transition(field=status, source=ABORTABLE, target=P.ABORTED)
    def abort(self, reason: str = "") -> None:
        self.failed_reason = reason
        self.next_retry_at = None


class ProcessStep(models.Model):
    """One entry of a process's log: a step that ran (or was skipped, or failed) and the state after it."""

    # Indexed through processstep_process_order (process, id), which also serves the log in order.
    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="steps", db_index=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=StepStatus.choices)
    # What the step changed: {"added": {...}, "changed": {...}, "removed": [...]} (processes.statelog).
    # Null on rows from before deltas were kept (their delta is worked out from the states).
    delta = models.JSONField(null=True, blank=True)
    # The whole state after the step, on some rows only (snapshots: processes.statelog says when); null
    # on the others, whose state is the last snapshot before them plus the deltas since. For a failed step:
    # the state it started from (so a retry starts from the state of the last successful step).
    state = models.JSONField(null=True, blank=True, default=None)
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    traceback = models.TextField(blank=True)
    created_by = models.CharField(max_length=150)
    started_at = models.DateTimeField()
    completed_at = models.DateTimeField()
    # 1 for a step's first run, 2 for its first retry, and so on.
    attempt = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["process", "id"]
        indexes = [
            models.Index(fields=["process", "id"], name="processstep_process_order"),
            # The last snapshot of a process, found without reading the delta rows after it.
            models.Index(fields=["process", "id"], name="processstep_snapshots",
                         condition=models.Q(state__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.status}"

    @property
    def duration(self) -> float:
        return (self.completed_at - self.started_at).total_seconds()

    def state_after(self) -> dict[str, Any]:
        """The whole state after this step, rebuilt from the log (one query; processes.statelog)."""
        from processes.statelog import state_at  # statelog reads this model

        return state_at(self.process_id, self.id) or {}


class ProcessSubscription(models.Model):
    """A subscription a process works on (the one place processes and subscriptions meet)."""

    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="process_subscriptions")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="process_links")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["process", "subscription"], name="unique_process_subscription")
        ]

    def __str__(self) -> str:
        return f"{self.process_id} ↔ {self.subscription_id}"


class InputType(models.TextChoices):
    INITIAL = "initial_state", "initial input"
    USER = "user_input", "user input"


class InputState(models.Model):
    """Every form submission a process received: its initial input and each resume's input."""

    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="inputs")
    input_type = models.CharField(max_length=20, choices=InputType.choices)
    step_name = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict)
    created_by = models.CharField(max_length=150)
    input_time = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["process", "input_time", "id"]

    def __str__(self) -> str:
        return f"{self.get_input_type_display()} for {self.process_id}"


class EngineSettings(models.Model):
    """The engine's one settings row: is it paused?"""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    paused = models.BooleanField(default=False)
    changed_at = models.DateTimeField(default=timezone.now)
    changed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name_plural = "engine settings"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="engine_settings_single_row")]

    def __str__(self) -> str:
        return "paused" if self.paused else "running"

    @classmethod
    def get(cls) -> EngineSettings:
        settings, _ = cls.objects.get_or_create(id=1)
        return settings


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` for starting a process: a repeat with the same key gets the same process.

    Unique per (user, key); `body_hash` is the SHA-256 of the request body as canonical JSON, so the same
    key with another body is told apart (and refused). Rows are kept at least IDEMPOTENCY_KEY_KEEP (24 h)
    after `created_at`; the scheduled task_clean_up_tasks deletes older ones (an older key still answers
    until then).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    # Null only inside the transaction that creates the row before it starts the process; every committed
    # row has its process. Deleting the process (a task) forgets the key with it.
    process = models.ForeignKey(Process, on_delete=models.CASCADE, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="unique_idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"{self.key} → {self.process_id}"


class ProcessLease(models.Model):
    """A running process's run record: who runs it now (or that it waits in a queue), until when, and
    how often it had to be handed over again. Kept apart from the process row on purpose.

    - Queued (`owner` empty): the process was handed to the executor and no run has taken it yet;
      `expires_at` is when the recovery sweep may hand it over again (`resends` counts those times).
    - Claimed (`owner` set): a run took it; `expires_at` is the end of its lease, renewed with the steps.
      A lease that lapsed while the process row is not locked belongs to a run that died: the sweep hands
      the process over again and counts a recovery (`recoveries`, reset when the process moved on since:
      `position` is the step the last run started at; or when a run of a step that runs again committed).

    The row is deleted when a run stops cleanly. In a table of its own, it can be read and written while a
    step in progress holds the process row's lock (an abort request, a status read).
    """

    process = models.OneToOneField(Process, on_delete=models.CASCADE, primary_key=True, related_name="lease")
    owner = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    # Database defaults: the engine's plain-SQL inserts leave these columns out.
    queued_at = models.DateTimeField(db_default=Now())
    position = models.PositiveIntegerField(db_default=0)
    recoveries = models.PositiveIntegerField(db_default=0)
    resends = models.PositiveIntegerField(db_default=0)
    # The last infrastructure error seen for this run (a hand-off that failed, a lost connection).
    last_error = models.TextField(blank=True, db_default="")
    # An abort asked for while a step was running: the run aborts the process at its next step boundary.
    abort_requested_at = models.DateTimeField(null=True, blank=True)
    abort_requested_by = models.CharField(max_length=150, blank=True, db_default="")
    abort_reason = models.TextField(blank=True, db_default="")

    def __str__(self) -> str:
        if self.queued:
            return f"{self.process_id} queued since {self.queued_at} (resent {self.resends} times)"
        return f"{self.process_id} held by {self.owner} until {self.expires_at}"

    @property
    def queued(self) -> bool:
        return not self.owner


class ScheduledRun(models.Model):
    """A scheduled task started for one period of its schedule (processes/scheduler.py, start_due_tasks).

    Unique per (task, period start): of several schedulers ticking at once, only the first inserts the
    row and starts the task; the others' inserts fail and they skip it. The row is written in the same
    transaction as the task's process, so a start that is refused leaves no row and is tried again at the
    next tick. Rows are deleted by task_clean_up_tasks, like the tasks they started.
    """

    task = models.CharField(max_length=100)
    period_start = models.DateTimeField()
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Null once task_clean_up_tasks deleted the task's process (the row still marks the period as done).
    process = models.ForeignKey(Process, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-period_start", "task"]
        constraints = [models.UniqueConstraint(fields=["task", "period_start"], name="unique_scheduled_run_per_period")]

    def __str__(self) -> str:
        return f"{self.task} for the period from {self.period_start}"


class ProcessStatusCount(models.Model):
    """Processes per status, kept by PostgreSQL triggers: a status's count is the sum of its rows' deltas.

    Every insert and delete of processes and every change of a process's status adds rows here (`+n` or
    `-n`), in the transaction that made the change, whatever made it (the engine's SQL, the ORM, a bulk
    delete): migration 0008 installs the triggers. Rows are only ever added, never updated, so writers
    do not queue for one counter row; processes.status_counts folds them into one row per status now and
    then. A read sees exactly the processes its snapshot sees. On SQLite there are no triggers and the
    table stays empty: the counts are a GROUP BY over the processes there.
    """

    status = models.CharField(max_length=20)
    delta = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.status} {self.delta:+d}"


# Callback tokens and their progress messages live in a module of their own (this one is long enough).
from processes.callback_models import CallbackProgress, CallbackToken  # noqa: E402, F401
from processes.group_models import ProcessGroupProgress  # noqa: E402, F401
from processes.metric_models import SchedulerTick, StepMetricsCursor, WorkflowStepTotals  # noqa: E402, F401
from processes.notification_models import Notification  # noqa: E402, F401
