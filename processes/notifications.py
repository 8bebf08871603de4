"""Notify on failure: the one hook that queues a notification whenever a process becomes `failed`.

Every way a process fails goes through one of its transitions to `failed` (`fail`: a step's failure, its
minimal record, the engine giving up; `stop_waiting`: a retrystep's automatic retry refused; `miss_callback`:
a callback deadline that passed). django-fsm signals each transition, so this module hears all of them,
whatever made them, without a call at each place. The hook only writes outbox rows, in the transaction
that fails the process (under a savepoint: a row that cannot be written is logged and never fails that
transaction); processes/notify_send.py sends them after the commit and from the scheduler's tick.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.core import checks
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django_fsm.signals import post_transition

from orchestrator_site.conf import orchestrator_setting
from processes.lookups import step_label
from processes.models import Process, ProcessStatus
from processes.notification_models import Notification, NotificationChannel, NotificationEvent

logger = logging.getLogger(__name__)

P = ProcessStatus
# The Process instance remembers the rows it queued, so that an abort in the same transaction (one asked
# for while the failing step ran) can withdraw them: the process ends aborted, not failed.
_QUEUED = "_queued_notifications"


def webhook_url() -> str:
    return str(orchestrator_setting("NOTIFY_WEBHOOK_URL") or "").strip()


def email_recipients() -> list[str]:
    raw = orchestrator_setting("NOTIFY_EMAILS") or ()
    if isinstance(raw, str):  # "a@x, b@y" instead of a tuple: meant as a list, not as its characters
        raw = raw.split(",")
    return [str(address).strip() for address in raw if str(address).strip()]


def enabled_channels() -> list[str]:
    channels = []
    if webhook_url():
        channels.append(NotificationChannel.WEBHOOK)
    if email_recipients():
        channels.append(NotificationChannel.EMAIL)
    return channels


@receiver(post_transition, sender=Process, dispatch_uid="processes.notifications.on_transition")
def on_transition(sender: type[Process], instance: Process, name: str, source: str, target: str,
                  **kwargs: Any) -> None:
    if "exception" in kwargs:
        return  # a transition method that raised: nothing changed
    if target == P.FAILED and source != P.FAILED:
        deadline = name == "miss_callback"
        queue(instance, NotificationEvent.CALLBACK_DEADLINE_PASSED if deadline else NotificationEvent.PROCESS_FAILED)
    elif source == P.FAILED and getattr(instance, _QUEUED, None):
        _withdraw(instance, target)


def queue(process: Process, event: str, now: datetime | None = None) -> list[int]:
    """Write one outbox row per enabled channel in the caller's transaction; send them once it commits.

    Never raises: a notification must not fail or undo the failure it reports.
    """
    channels = enabled_channels()
    if not channels:
        return []
    now = now or timezone.now()
    try:
        with transaction.atomic():  # a savepoint: an error here leaves the caller's transaction usable
            body = payload(process, event, now)
            rows = Notification.objects.bulk_create([
                Notification(process_id=process.process_id, event=event, channel=channel, payload=body,
                             created_at=now, next_try_at=now)
                for channel in channels
            ])
    except Exception:
        logger.exception("process %s: could not queue its %s notification; it will not be sent",
                         process.process_id, event)
        return []
    ids = [row.pk for row in rows]
    setattr(process, _QUEUED, [*getattr(process, _QUEUED, []), *ids])

    def committed() -> None:
        from processes import notify_send

        setattr(process, _QUEUED, [])  # committed: a later change of this instance withdraws nothing
        notify_send.send_soon(ids)

    transaction.on_commit(committed, robust=True)  # robust: whatever happens, the commit stands
    return ids


def _withdraw(process: Process, target: str) -> None:
    ids = getattr(process, _QUEUED)
    setattr(process, _QUEUED, [])
    deleted, _ = Notification.objects.filter(pk__in=ids, sent_at__isnull=True).delete()
    if deleted:
        logger.info("process %s: %s before its failure was committed; its notification is withdrawn",
                    process.process_id, target)


def payload(process: Process, event: str, now: datetime) -> dict[str, Any]:
    """The webhook's JSON body (the email is written from it too)."""
    from processes.callbacks import base_url

    pid = str(process.process_id)
    base = base_url()
    return {
        "event": str(event),
        "process_id": pid,
        "workflow": process.workflow.name,
        "status": str(process.status),
        "failed_reason": process.failed_reason,
        # The step the process stopped at: the one whose failed row this transaction writes.
        "step": step_label(process.workflow_version, process.current_step),
        "attempt": process.current_attempt,
        "admin_url": base + reverse("admin:processes_process_change", args=[pid]),
        "api_url": base + reverse("process-detail", kwargs={"id": pid}),
        "occurred_at": now.isoformat(),
    }


def email_subject(body: dict[str, Any]) -> str:
    reason = " ".join(str(body.get("failed_reason") or "no reason given").split())
    if len(reason) > 80:
        reason = reason[:79] + "…"
    short_id = str(body.get("process_id", "?"))[:8]
    return f"[orchestrator] process {short_id} of {body.get('workflow', '?')} failed: {reason}"


def email_text(body: dict[str, Any]) -> str:
    deadline = body.get("event") == NotificationEvent.CALLBACK_DEADLINE_PASSED
    what = "its callback did not come before the deadline" if deadline else "a step failed"
    return "\n".join([
        f"Process {body.get('process_id')} of workflow {body.get('workflow')} failed: {what}.",
        "",
        f"Reason:  {body.get('failed_reason')}",
        f"Step:    {body.get('step')} (attempt {body.get('attempt')})",
        f"When:    {body.get('occurred_at')}",
        f"Status:  {body.get('status')}",
        "",
        f"Admin:   {body.get('admin_url')}",
        f"API:     {body.get('api_url')}",
        "",
        "Retry, skip or abort it from the admin page above.",
        "",
    ])


@checks.register()
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A misspelt webhook URL or address is reported at start-up, not at the first failure."""
    errors: list[checks.CheckMessage] = []
    url = webhook_url()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(checks.Error(
                f'ORCHESTRATOR["NOTIFY_WEBHOOK_URL"] = {url!r} is not an http:// or https:// URL',
                hint="e.g. https://alerts.example.org/orchestrator, or \"\" for no webhook", id="processes.E101"))
    for address in email_recipients():
        try:
            validate_email(address)
        except ValidationError:
            errors.append(checks.Error(f'ORCHESTRATOR["NOTIFY_EMAILS"]: {address!r} is not an email address',
                                       id="processes.E102"))
    for key in ("NOTIFY_MAX_TRIES", "NOTIFY_TIMEOUT_SECONDS"):
        if float(orchestrator_setting(key)) <= 0:
            errors.append(checks.Error(f'ORCHESTRATOR["{key}"] must be more than 0', id="processes.E103"))
    return errors
