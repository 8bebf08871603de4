"""The notification outbox: one row per failure and channel (webhook or email), written with the failure."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class NotificationEvent(models.TextChoices):
    PROCESS_FAILED = "process_failed", "process failed"
    CALLBACK_DEADLINE_PASSED = "callback_deadline_passed", "callback deadline passed"


class NotificationChannel(models.TextChoices):
    WEBHOOK = "webhook", "webhook"
    EMAIL = "email", "email"


class Notification(models.Model):
    """A notification to send (processes/notify_send.py), inserted in the transaction that failed the process.

    A failure that rolls back takes its row with it (nothing is sent), and one that commits cannot lose it
    to a crash: it is sent after the commit, and by the scheduler's tick until it was sent or tried
    NOTIFY_MAX_TRIES times. `next_try_at` is when it is due; null once it was sent (`sent_at`) or given up
    (no `sent_at`; `last_error` says why). The payload is the webhook's JSON body; the email is written from it.
    """

    # Kept when the process is deleted (a task's clean-up): the payload names it.
    process = models.ForeignKey("processes.Process", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="notifications")
    event = models.CharField(max_length=40, choices=NotificationEvent.choices)
    channel = models.CharField(max_length=10, choices=NotificationChannel.choices)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True)
    # Set while a sender sends it (in real time, whatever moment a tick was given): no other sender takes it.
    claimed_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The tick's question, "which are due?", reads only the rows still to send.
            models.Index(fields=["next_try_at"], name="notification_due",
                         condition=models.Q(next_try_at__isnull=False)),
            models.Index(fields=["created_at"], name="notification_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_event_display()} by {self.channel} for {self.payload.get('process_id', '?')}: {self.state}"

    @property
    def state(self) -> str:
        if self.sent_at is not None:
            return "sent"
        return "pending" if self.next_try_at is not None else "given up"
