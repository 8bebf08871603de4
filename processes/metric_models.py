"""What /metrics and the health check read besides the processes: the scheduler's last tick and the step totals."""

from __future__ import annotations

from django.db import models


class SchedulerTick(models.Model):
    """The scheduler's one heartbeat row: when a tick last completed, where, and how many of its parts raised.

    Written once at the end of every tick (processes/scheduler_ticks.py), by whichever scheduler ticked:
    one row updated in place, so it stays one row however long the scheduler runs.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    last_tick_at = models.DateTimeField()
    # hostname:pid of the scheduler that ticked last (several may run).
    last_tick_by = models.CharField(max_length=200, blank=True)
    # How many parts of that tick raised (logged with their traceback); 0 for a clean tick.
    failed_parts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="scheduler_tick_single_row")]

    def __str__(self) -> str:
        return f"last tick at {self.last_tick_at} by {self.last_tick_by or '?'}"


class StepMetricsCursor(models.Model):
    """How far the step totals have been folded (processes/step_metrics.py): one row, locked by the fold.

    Every ProcessStep row with an id up to `last_step_id` has been counted, except the ids in `gaps`:
    ids below it not seen yet (a transaction that had not committed when the fold passed them, or one that
    rolled back), each [first id, last id, until] with until a UNIX time after which the gap is given up.
    `last_step_id` is null until the first fold, which starts counting from the newest row then.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    last_step_id = models.BigIntegerField(null=True, blank=True)
    gaps = models.JSONField(default=list, blank=True)
    folded_at = models.DateTimeField(null=True, blank=True)
    # Since when steps are counted (the first fold): the counters' start.
    counting_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="step_metrics_cursor_single_row")]

    def __str__(self) -> str:
        return f"step totals folded up to step {self.last_step_id}"


class WorkflowStepTotals(models.Model):
    """Cumulative step counts of one workflow since counting started: they only ever grow.

    Kept apart from the step log, so deleting old processes (task_clean_up_tasks) takes nothing away from
    them. `buckets[i]` counts the steps that took at most step_metrics.BUCKETS[i] seconds and more than
    the bound before it (not cumulative; the last entry: longer than every bound).
    """

    # The workflow's name, not a key: the totals outlive a workflow removed from the code.
    workflow = models.CharField(max_length=200, unique=True)
    buckets = models.JSONField(default=list)
    steps = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    failures = models.BigIntegerField(default=0)
    deadlines_passed = models.BigIntegerField(default=0)
    completions = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "workflow step totals"

    def __str__(self) -> str:
        return f"{self.workflow}: {self.steps} steps, {self.failures} failures"
