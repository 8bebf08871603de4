"""The callbacks a process awaits from external systems (one token each) and the progress messages they sent."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class CallbackToken(models.Model):
    """One callback a callback step asked for: the hash of its single-use token, its deadline, and its fate.

    Open (neither received nor closed): the external system may call back with the token. Received: the
    answer is in the log (a `callback` row) and the step's validate runs next; closed when that succeeded.
    Closed without an answer: the deadline passed, or the process was retried, skipped or aborted; the
    token no longer works. The token itself is never stored: only its SHA-256, compared in constant time.
    """

    process = models.ForeignKey("processes.Process", on_delete=models.CASCADE, related_name="callbacks")
    step_name = models.CharField(max_length=200)
    # The step's position in the workflow and its try: a retry's callback is another row, another token.
    position = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    # A callback step inside a step group: its index in the group (the position is the group's); else None.
    sub_step = models.PositiveIntegerField(null=True, blank=True)
    token_hash = models.CharField(max_length=64)
    issued_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField()
    received_at = models.DateTimeField(null=True, blank=True)
    # Who delivered the answer: "external system" through the token, or the staff member who did by hand.
    received_by = models.CharField(max_length=150, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["process", "id"]
        indexes = [models.Index(fields=["process", "id"], name="callback_process_order")]

    def __str__(self) -> str:
        return f"callback of {self.step_name!r} for {self.process_id} ({self.fate})"

    @property
    def is_open(self) -> bool:
        return self.received_at is None and self.closed_at is None

    @property
    def fate(self) -> str:
        if self.is_open:
            return "open"
        if self.received_at is not None:
            return "received" if self.closed_at is None else "received and validated"
        return f"closed: {self.closed_reason}"


class CallbackProgress(models.Model):
    """A progress message an external system sent while the process awaited its callback (never advances it)."""

    callback = models.ForeignKey(CallbackToken, on_delete=models.CASCADE, related_name="progress")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["callback", "id"]
        verbose_name_plural = "callback progress messages"

    def __str__(self) -> str:
        return self.message[:80]
