"""Where a process is inside a step group: the next sub-step to run and the state its sub-steps left so far."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ProcessGroupProgress(models.Model):
    """A process in the middle of a step group (processes.groups): at most one row per process.

    Written in the transaction of each sub-step that is not the group's last (with that sub-step's own
    writes), so a run that dies between two sub-steps goes on at the next one with the state they left,
    and none runs twice. Deleted with the group's log row when its last sub-step commits, and when the group
    fails, is skipped or the process is aborted: a retry starts the group again at its first sub-step.
    """

    process = models.OneToOneField("processes.Process", on_delete=models.CASCADE, primary_key=True,
                                   related_name="group_progress")
    # The group's position in the workflow's steps (the process's current_step while it is inside).
    position = models.PositiveIntegerField()
    # The index in the group of the next sub-step to run (or the one the process waits at).
    sub_step = models.PositiveIntegerField(default=0)
    # The whole state after the sub-steps done so far (the log keeps the state before the group until its row).
    state = models.JSONField(default=dict)
    started_at = models.DateTimeField(default=timezone.now)
    # The group's sub-step names when this row was written: a deploy that renames, adds or removes a sub-step
    # before the one to run next is refused (processes.groups.changed_sub_steps), not run at the wrong one.
    sub_steps = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "process group progress"

    def __str__(self) -> str:
        return f"{self.process_id}: step {self.position + 1}, sub-step {self.sub_step + 1}"
