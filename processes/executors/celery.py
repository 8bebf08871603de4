"""The Celery executor: sends the process id to the broker; workers on any machine run it."""

from __future__ import annotations

import threading
import time
import uuid

from kombu.exceptions import OperationalError

from orchestrator_site.conf import orchestrator_setting
from processes.errors import ExecutorUnavailable

# Per broker URL: when (time.monotonic()) the broker last took a message or answered a check; None once
# a hand-over to it failed. Shared by the threads of this process.
_broker_seen_up: dict[str, float | None] = {}
_lock = threading.Lock()


def _unavailable(exc: BaseException, outcome: str) -> ExecutorUnavailable:
    from orchestrator_site.celery import app

    return ExecutorUnavailable(
        f"could not reach the broker at {_safe_url(app.conf.broker_url or '')} ({str(exc).rstrip('.')}): "
        f"{outcome}. Check that the broker runs and that CELERY_BROKER_URL points at it, then try again"
    )


def _safe_url(url: str) -> str:
    # Never echo a broker password into an API answer or a log.
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _broker_url() -> str:
    from orchestrator_site.celery import app

    return str(app.conf.broker_url or "")


def _note_broker(up: bool) -> None:
    """Remember that the broker just worked, or just failed (then the next start checks it)."""
    with _lock:
        _broker_seen_up[_broker_url()] = time.monotonic() if up else None


def _broker_known_up() -> bool:
    """Whether the broker worked within the last BROKER_CHECK_SECONDS (and has not failed since)."""
    with _lock:
        seen = _broker_seen_up.get(_broker_url())
    return seen is not None and time.monotonic() - seen < float(orchestrator_setting("BROKER_CHECK_SECONDS"))


def _ping(conn: object) -> None:
    """One round trip to the broker on this (pooled, already open) connection.

    Redis: PING on the channel's client, which reuses its socket. Other transports: kombu's own check,
    which connects if the connection is not open (a pooled one stays open for the next check).
    """
    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,  # type: ignore[attr-defined]
                           interval_max=0.2, timeout=_timeout())
    client = getattr(conn.default_channel, "client", None)  # type: ignore[attr-defined]
    if client is not None and callable(getattr(client, "ping", None)):
        client.ping()


def _timeout() -> float:
    from orchestrator_site.celery import app

    return float(app.conf.broker_connection_timeout or 3)


def broker_problem(timeout: float) -> str | None:
    """None when the broker answers (or took a message or answered a check lately), else why not, in a line.

    For the health check: a connection of its own, not the pool's (a broker that hangs must not hold a
    connection the starts need), opened with `timeout` for the connection and every read, and closed again.
    """
    if _broker_known_up():
        return None
    from orchestrator_site.celery import app

    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "max_retries": 0}
    try:
        with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0,
                                   timeout=timeout)
            client = getattr(conn.default_channel, "client", None)
            if client is not None and callable(getattr(client, "ping", None)):
                client.ping()
    except Exception as exc:  # any failure to answer is an answer: the broker is not usable
        _note_broker(up=False)
        return f"could not reach the broker at {_safe_url(_broker_url())}: {type(exc).__name__}: {str(exc)[:200]}"
    _note_broker(up=True)
    return None


class CeleryExecutor:
    def check_available(self) -> None:
        """Fail fast (503) before anything is written when the broker cannot be reached.

        Only when the broker has not taken a message nor answered a check in the last
        BROKER_CHECK_SECONDS: under load every hand-over shows the broker is up, and starts check
        nothing. A check borrows a connection from the app's pool (kept open from one check to the next)
        instead of opening one. A broker that goes away within those seconds fails the hand-over after
        the commit instead, which loses nothing: the process waits, queued, the recovery sweep hands it
        over again, and the next start checks.
        """
        if _broker_known_up():
            return
        from kombu.exceptions import LimitExceeded

        from orchestrator_site.celery import app

        try:
            with app.pool.acquire(block=True, timeout=_timeout()) as conn:
                try:
                    _ping(conn)
                except Exception as exc:
                    if not isinstance(exc, (OperationalError, OSError, *conn.connection_errors)):
                        raise
                    conn.collect()  # dropped: the pool opens a new one for the next check
                    raise OperationalError(str(exc)) from exc
        except (OperationalError, OSError, LimitExceeded) as exc:
            _note_broker(up=False)
            raise _unavailable(exc, "nothing was started or changed") from exc
        _note_broker(up=True)

    def submit(self, process_id: uuid.UUID) -> None:
        from processes.tasks import run_process_task

        try:
            # No publish retries: a broker that went away between the check and now fails the start now,
            # rather than holding the request while kombu retries.
            run_process_task.apply_async(args=[str(process_id)], retry=False)
        except (OperationalError, OSError) as exc:
            _note_broker(up=False)
            raise _unavailable(exc, f"process {process_id} could not be queued") from exc
        _note_broker(up=True)
