"""The Celery executor: sends the process id to the broker; workers on any machine run it."""

from __future__ import annotations

import uuid

from kombu.exceptions import OperationalError

from processes.errors import ExecutorUnavailable


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


class CeleryExecutor:
    def check_available(self) -> None:
        """Fail fast (503) before anything is written when the broker cannot be reached."""
        from orchestrator_site.celery import app

        try:
            with app.connection_for_write() as conn:
                # One quick retry, not Celery's patient back-off: a client is waiting for the answer.
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, interval_max=0.2,
                                       timeout=float(app.conf.broker_connection_timeout or 3))
        except (OperationalError, OSError) as exc:
            raise _unavailable(exc, "nothing was started or changed") from exc

    def submit(self, process_id: uuid.UUID) -> None:
        from processes.tasks import run_process_task

        try:
            # No publish retries: a broker that went away between the check and now fails the start now,
            # rather than holding the request while kombu retries.
            run_process_task.apply_async(args=[str(process_id)], retry=False)
        except (OperationalError, OSError) as exc:
            raise _unavailable(exc, f"process {process_id} could not be queued") from exc
