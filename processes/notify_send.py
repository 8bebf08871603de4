"""Sending the notification outbox (processes/notifications.py writes it): a webhook POST or an email per row.

Sent right after the failure commits, by a short-lived daemon thread of the process that committed it (never
the engine's own thread: a slow receiver delays no step), and by the scheduler's tick for what that did not
send (a receiver that was down, a crash). A sender first claims a row, in a short transaction under its row
lock taken with SKIP LOCKED, until after the send: two schedulers never send one twice. A send
that fails is logged with the reason and tried again with backoff, NOTIFY_MAX_TRIES times at most; nothing
here raises into the engine.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib import request as urlrequest
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from django.conf import settings
from django.core import mail
from django.db import DatabaseError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from processes.dberrors import connection_lost, storable_text
from processes.notification_models import Notification, NotificationChannel
from processes.notifications import email_recipients, email_subject, email_text, webhook_url

logger = logging.getLogger(__name__)

USER_AGENT = "subscription-orchestrator"
THREAD_NAME = "orchestrator-notify"
# At most this many notifications wait for the after-commit thread of one OS process (a burst of
# failures); the others are sent by the scheduler's next tick.
MAX_PENDING = 1000


class SendFailed(Exception):
    """A notification could not be sent; the message says why (logged, and kept on the row)."""


class ChannelOff(SendFailed):
    """The channel was switched off after the notification was queued: given up at once."""


def backoff(tries: int) -> timedelta:
    """The wait after `tries` failed tries: NOTIFY_BACKOFF_SECONDS, doubled each time, capped."""
    base = float(orchestrator_setting("NOTIFY_BACKOFF_SECONDS"))
    cap = float(orchestrator_setting("NOTIFY_BACKOFF_MAX_SECONDS"))
    return timedelta(seconds=min(base * 2 ** max(tries - 1, 0), cap))


# --- the channels ------------------------------------------------------------------------------------
class _NoRedirect(urlrequest.HTTPRedirectHandler):
    # Followed, a redirect would turn the POST into a GET without its body: it is reported as the answer.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urlrequest.build_opener(_NoRedirect)


def _where(url: str) -> str:
    """The receiver without its path or query, which may hold a secret (Slack-style URLs)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the configured URL"


def post_webhook(url: str, body: dict[str, Any], *, timeout: float, headers: dict[str, str] | None = None) -> int:
    """POST `body` as JSON; the answer's status (2xx), or SendFailed saying why not."""
    request = urlrequest.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})})
    where = _where(url)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            return int(response.status)
    except HTTPError as exc:  # any answer but 2xx
        text = ""
        try:
            text = " ".join(exc.read(300).decode("utf-8", "replace").split())
        except Exception:  # the body is only a hint
            text = ""
        raise SendFailed(f"the webhook at {where} answered {exc.code} {exc.reason}" + (f": {text}" if text else "")
                         ) from None
    except TimeoutError:
        raise SendFailed(f"the webhook at {where} did not answer within {timeout:g}s") from None
    except URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise SendFailed(f"the webhook at {where} did not answer within {timeout:g}s") from None
        raise SendFailed(f"could not reach the webhook at {where}: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise SendFailed(f"could not send to the webhook at {where}: {type(exc).__name__}: {exc}") from None


def send_email(recipients: list[str], body: dict[str, Any], *, timeout: float) -> None:
    """Send the plain-text email through Django's default mailer; SendFailed saying why not."""
    message = mail.EmailMessage(subject=email_subject(body), body=email_text(body),
                                from_email=settings.DEFAULT_FROM_EMAIL, to=recipients)
    try:
        mailer = mail.mailers.default
        # A mail server that never answers must not hold the sender (and the row's lock) for ever.
        if getattr(mailer, "timeout", 0) is None:
            mailer.timeout = timeout
        sent = mailer.send_messages([message])
    except Exception as exc:
        raise SendFailed(f"could not send the email to {', '.join(recipients)}: {type(exc).__name__}: {exc}"
                         ) from None
    if not sent:
        raise SendFailed(f"the mailer sent no email to {', '.join(recipients)}")


def _deliver(row: Notification) -> None:
    timeout = float(orchestrator_setting("NOTIFY_TIMEOUT_SECONDS"))
    if row.channel == NotificationChannel.WEBHOOK:
        url = webhook_url()
        if not url:
            raise ChannelOff('ORCHESTRATOR["NOTIFY_WEBHOOK_URL"] is no longer set')
        post_webhook(url, row.payload, timeout=timeout, headers={
            "X-Orchestrator-Event": row.event, "X-Orchestrator-Notification": str(row.pk)})
    else:
        recipients = email_recipients()
        if not recipients:
            raise ChannelOff('ORCHESTRATOR["NOTIFY_EMAILS"] is no longer set')
        send_email(recipients, row.payload, timeout=timeout)


# --- sending one row ---------------------------------------------------------------------------------
def claim_period() -> timedelta:
    """How long a sender holds a row it claimed: longer than any send (each network wait is bounded)."""
    return timedelta(seconds=3 * float(orchestrator_setting("NOTIFY_TIMEOUT_SECONDS")) + 60)


def _due(now: datetime) -> QuerySet[Notification]:
    """Due at `now` (a tick may be given another moment) and claimed by no sender now (in real time)."""
    unclaimed = Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())
    return Notification.objects.filter(unclaimed, next_try_at__isnull=False, next_try_at__lte=now)


def _claim(pk: int, now: datetime, down: set[str] | None) -> Notification | None:
    """Take a due row for this sender, in a short transaction of its own: under its row lock (SKIP LOCKED: a
    row another sender is claiming is its), count the try and mark it claimed until after the send, so that
    no other sender takes it meanwhile. No transaction stays open during the send: on SQLite one would hold
    the database's write lock, and every step of every process would wait for the receiver."""
    with transaction.atomic():
        row = _due(now).select_for_update(skip_locked=True).filter(pk=pk).first()
        if row is None or (down is not None and row.channel in down):
            return None
        row.tries += 1
        row.claimed_until = timezone.now() + claim_period()
        row.save(update_fields=["tries", "claimed_until"])
    return row


def _record(row: Notification, **fields: Any) -> None:
    # Only while the claim is still this sender's (the same try): one that outlasted its claim records nothing.
    fields["claimed_until"] = None
    if not Notification.objects.filter(pk=row.pk, tries=row.tries, sent_at__isnull=True).update(**fields):
        logger.warning("notification %s: its try %d outlasted its claim; another sender took it over",
                       row.pk, row.tries)


def send_one(pk: int, now: datetime | None = None, *, down: set[str] | None = None) -> bool | None:
    """Claim and send one due notification: True if sent, False if this try failed, None if it was not due,
    sent or claimed by another sender meanwhile, or its channel is in `down` (it failed just now)."""
    now = now or timezone.now()
    row = _claim(pk, now, down)
    if row is None:
        return None
    try:
        _deliver(row)
    except SendFailed as exc:
        failure: SendFailed = exc
    except Exception as exc:  # unexpected: logged in full, tried again like any failure
        logger.exception("notification %s: sending it raised", row.pk)
        failure = SendFailed(f"{type(exc).__name__}: {exc}")
    else:
        _record(row, sent_at=timezone.now(), next_try_at=None)
        logger.info("process %s: %s notification sent by %s (try %d)", _process(row), row.event, row.channel,
                    row.tries)
        return True
    max_tries = int(orchestrator_setting("NOTIFY_MAX_TRIES"))
    if isinstance(failure, ChannelOff) or row.tries >= max_tries:
        next_try_at = None
        logger.error("process %s: gave up on its %s notification by %s after %d tr%s: %s", _process(row),
                     row.event, row.channel, row.tries, "y" if row.tries == 1 else "ies", failure)
    else:
        next_try_at = now + backoff(row.tries)
        logger.warning("process %s: its %s notification by %s failed (try %d of %d; next at %s): %s",
                       _process(row), row.event, row.channel, row.tries, max_tries,
                       f"{next_try_at:%Y-%m-%d %H:%M:%S %Z}", failure)
    _record(row, last_error=storable_text(str(failure), 2000), next_try_at=next_try_at)
    if down is not None:
        down.add(row.channel)
    return False


def _process(row: Notification) -> str:
    return str(row.payload.get("process_id") or row.process_id)


def send_due(now: datetime | None = None, *, limit: int = 100) -> list[int]:
    """The scheduler's part: send the notifications due at `now`; return the ids sent.

    A channel that fails once is left for the next tick (its other rows stay due): a receiver that is down
    costs one timeout per tick, not one per notification.
    """
    now = now or timezone.now()
    due = list(_due(now).order_by("next_try_at", "id").values_list("id", flat=True)[:limit])
    sent: list[int] = []
    down: set[str] = set()
    for pk in due:
        try:
            if send_one(pk, now, down=down):
                sent.append(pk)
        except DatabaseError as exc:
            if connection_lost(exc):
                raise  # nothing else can be done on this tick
            logger.exception("notification %s: could not record its sending; the next tick tries again", pk)
    return sent


# --- after the commit: a short-lived thread ------------------------------------------------------------
_lock = threading.Lock()
_pending: deque[int] = deque()
_worker: threading.Thread | None = None


def send_soon(ids: Iterable[int]) -> None:
    """Hand notifications just committed to this OS process's sender thread (started if none runs).

    One thread at most per OS process, so a burst of failures opens one database connection, not one per
    failure; it ends when nothing is left. Never raises: called after a commit, by whatever committed.
    """
    global _worker
    try:
        with _lock:
            ids = list(ids)
            room = max(MAX_PENDING - len(_pending), 0)
            _pending.extend(ids[:room])
            if len(ids) > room:
                logger.warning("%d notification(s) left for the scheduler's next tick: %d wait already",
                               len(ids) - room, len(_pending))
            if _worker is None and _pending:
                _worker = threading.Thread(target=_drain, name=THREAD_NAME, daemon=True)
                _worker.start()
    except Exception:  # e.g. no thread can be started: the tick sends them
        _worker = None
        logger.exception("could not start sending notifications now; the scheduler's next tick sends them")


def _drain() -> None:
    global _worker
    down: set[str] = set()
    try:
        while True:
            with _lock:
                if not _pending:
                    _worker = None
                    return
                pk = _pending.popleft()
            try:
                send_one(pk, down=down)
            except Exception:  # the row stays due: the tick sends it
                logger.exception("notification %s: could not send it after the commit; the tick will", pk)
    finally:
        with _lock:
            if _worker is threading.current_thread():
                _worker = None
        connection.close()  # this thread's own connection


def wait_until_idle(timeout: float = 10.0) -> bool:
    """Wait for the after-commit thread to finish (tests, a graceful shutdown); False if it still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            worker = _worker
        if worker is None:
            return True
        worker.join(min(0.05, max(deadline - time.monotonic(), 0)))
    return False


# --- clean-up ----------------------------------------------------------------------------------------
def delete_old(now: datetime | None = None) -> int:
    """Delete notifications sent or given up more than NOTIFY_RETENTION_DAYS ago, CLEANUP_BATCH_SIZE per
    statement; how many. Ones still to send are kept, whatever their age."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=float(orchestrator_setting("NOTIFY_RETENTION_DAYS")))
    size = max(int(orchestrator_setting("CLEANUP_BATCH_SIZE")), 1)
    old = Notification.objects.filter(next_try_at__isnull=True, created_at__lt=cutoff)
    total = 0
    while True:
        batch = list(old.order_by("id").values_list("id", flat=True)[:size])
        if not batch:
            return total
        deleted, _ = Notification.objects.filter(pk__in=batch).delete()
        total += deleted
