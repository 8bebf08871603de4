"""The ORCHESTRATOR settings namespace: documented defaults and the one accessor to read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Every key the orchestrator reads, with its default. Override any of them in settings.ORCHESTRATOR.
DEFAULTS: dict[str, Any] = {
    # Lifecycle statuses in which a subscription's typed domain model must have every required field
    # filled in. While a subscription is `initial` or `provisioning` a create workflow is still filling
    # it in, so missing values are allowed there; a `terminated` one keeps whatever it had.
    "STRICT_LIFECYCLE_STATUSES": ("active", "disabled", "migrating"),
    # The name recorded as "who" for changes made without a user (scheduler, system tasks, shell).
    "SYSTEM_ACTOR": "system",
    # How processes run: "inline" (to the end, in the caller: commands and tests), "threadpool" (a bounded
    # pool of threads in the web process: the recommended embedded setting), "celery" (workers on any
    # number of machines, through the broker CELERY_BROKER_URL), or a dotted path to an executor class.
    "EXECUTOR": "inline",
    # How many processes the "threadpool" executor runs at once in each web process.
    "THREADPOOL_WORKERS": 4,
    # A @retrystep that fails is retried automatically: after BACKOFF seconds, then twice as long each
    # time (at most BACKOFF_MAX), until it has been tried MAX_TRIES times; then the process fails.
    "RETRYSTEP_MAX_TRIES": 5,
    "RETRYSTEP_BACKOFF_SECONDS": 5.0,
    "RETRYSTEP_BACKOFF_MAX_SECONDS": 3600.0,
    # A runner holds a process's lease this long, renewed at every step; when it lapses (the runner
    # died, or one step ran longer than this), the recovery sweep hands the process to the executor again.
    "LEASE_SECONDS": 300.0,
    # How often the scheduler does its periodic work (retry waiting processes whose backoff is due, recover
    # processes whose run died, start scheduled tasks): `manage.py run_scheduler`, Celery beat
    # (task processes.scheduler_tick) and the embedded scheduler thread all tick this often.
    "SWEEP_INTERVAL_SECONDS": 10.0,
    # Run the scheduler as a daemon thread inside the web process (the embedded setup, no other process
    # needed). Only the serving process starts it (runserver, or the WSGI/ASGI application), never
    # manage.py migrate/test/shell. Several web processes may each run one: they never do a job twice.
    "EMBEDDED_SCHEDULER": False,
    # When the scheduler starts each system task: {task name: schedule}. A schedule is "daily HH:MM" (in
    # TIME_ZONE) or "every N minutes" (N from 1 to 1440, counted from midnight UTC). A task runs at most
    # once per period, however many schedulers run; a period missed while no scheduler ran is made up once
    # at the next tick. Leave a task out (or give it "off") to never schedule it. From the environment:
    # ORCHESTRATOR_SCHEDULE="task_validate_subscriptions=daily 02:00;task_clean_up_tasks=every 60 minutes".
    "SCHEDULE": {
        "task_validate_subscriptions": "daily 02:00",
        "task_clean_up_tasks": "daily 03:00",
    },
    # task_clean_up_tasks deletes completed tasks' processes (with their logs) this many days after they
    # finished. Workflows' processes are never deleted: they are the audit record of their subscriptions.
    "TASK_RETENTION_DAYS": 30,
    # ... and idempotency keys this many hours after their request (never fewer than 24: a client may
    # repeat a start with the same key for a day).
    "IDEMPOTENCY_KEY_RETENTION_HOURS": 24,
    # The largest request body the API accepts, in bytes; a larger one is answered 413.
    "API_MAX_BODY_BYTES": 1024 * 1024,
    # The most items one page of an API list may hold (?limit=), whatever the client asks.
    "API_MAX_PAGE_SIZE": 500,
    # The deepest nesting of arrays and objects accepted in an API request body and in a workflow's input
    # (from the API, the command line or the admin); deeper is refused as invalid input. Input ends up in
    # the process state (jsonb), which every later step, page and log row reads back.
    "JSON_MAX_DEPTH": 32,
}


def orchestrator_setting(name: str) -> Any:
    """Return ORCHESTRATOR[name], or its documented default."""
    if name not in DEFAULTS:
        raise KeyError(f"{name!r} is not an orchestrator setting; known: {', '.join(sorted(DEFAULTS))}")
    configured = getattr(settings, "ORCHESTRATOR", {}) or {}
    unknown = set(configured) - set(DEFAULTS)
    if unknown:
        # A typo in a setting name would otherwise silently fall back to the default.
        raise ImproperlyConfigured(
            f"Unknown ORCHESTRATOR setting(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(DEFAULTS))}"
        )
    return configured.get(name, DEFAULTS[name])


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """ORCHESTRATOR_<KEY> variables, read as the type of the key's default; a bad value is refused by name."""
    found: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        raw = environ.get(f"ORCHESTRATOR_{key}", "").strip()
        if not raw:
            continue
        try:
            if isinstance(default, bool):
                if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError("not a boolean")
                found[key] = raw.lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int | float):
                found[key] = type(default)(raw)
            elif isinstance(default, tuple | list):
                found[key] = tuple(item.strip() for item in raw.split(",") if item.strip())
            else:
                found[key] = raw
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"ORCHESTRATOR_{key}={raw!r} is not a valid {type(default).__name__} ({exc})"
            ) from exc
    return found
