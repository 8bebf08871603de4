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
    # The "celery" executor checks the broker before a start, resume or retry writes anything (503 when it
    # cannot be reached), unless the broker took a message or answered a check within this many seconds
    # (0: check before every one). A broker lost within them fails the hand-over after the commit instead,
    # which loses nothing: the process waits, queued, until the recovery sweep hands it over again.
    "BROKER_CHECK_SECONDS": 5.0,
    # A @retrystep that fails is retried automatically: after BACKOFF seconds, then twice as long each
    # time (at most BACKOFF_MAX), until it has been tried MAX_TRIES times; then the process fails.
    "RETRYSTEP_MAX_TRIES": 5,
    "RETRYSTEP_BACKOFF_SECONDS": 5.0,
    "RETRYSTEP_BACKOFF_MAX_SECONDS": 3600.0,
    # A run holds a process's lease this long, renewed with its steps. When the lease lapsed and no step
    # of the process is in progress (a step in progress holds the process row's lock, which PostgreSQL
    # lets go when the run's connection dies), the run died: the recovery sweep hands the process over.
    "LEASE_SECONDS": 300.0,
    # A process whose run died is handed over at most this many times in a row at the same step (no
    # step finished in between, nor a run of a step that runs again: a worker that keeps crashing there,
    # or an outcome that could not be recorded); then it is failed, saying so, instead of running that
    # step again without end.
    "RECOVERY_MAX_TIMES": 5,
    # A process handed to the executor that no worker has taken yet (its message may have been lost) is
    # handed over again after RESEND_AFTER_SECONDS, then twice as long each time (at most
    # RESEND_BACKOFF_MAX_SECONDS), at most RESEND_MAX_TIMES times; then it is failed, saying no worker
    # took it (a retry hands it over again).
    "RESEND_AFTER_SECONDS": 300.0,
    "RESEND_BACKOFF_MAX_SECONDS": 3600.0,
    "RESEND_MAX_TIMES": 10,
    # A run that loses its database connection (server restart, fail-over, a killed backend) in a step
    # reconnects and runs that step again (its transaction rolled back, so nothing of it was kept), up to
    # DB_RECONNECT_TRIES times in a row, waiting DB_RECONNECT_BACKOFF_SECONDS, then twice as long each time
    # (at most DB_RECONNECT_BACKOFF_MAX_SECONDS): with the defaults, a database away for about half a
    # minute (a restart, a fail-over) is waited out; then the process is failed with the reason.
    "DB_RECONNECT_TRIES": 8,
    "DB_RECONNECT_BACKOFF_SECONDS": 0.5,
    "DB_RECONNECT_BACKOFF_MAX_SECONDS": 10.0,
    # How long an operator's action (retry, skip, abort, delete) or a run taking a process waits for the
    # process row's lock. Longer means a step is running: the action says so (an abort is then done at
    # the step's end) rather than waiting for the whole step.
    "LOCK_WAIT_SECONDS": 2.0,
    # The most child processes one children step (workflows.compose.subprocesses) may start: all of them are
    # created in that step's one transaction, which holds the parent's and the items' subscriptions' row
    # locks while it runs (about a millisecond per child). More items fail the step, saying so: split them
    # over several steps or parents, or raise this.
    "MAX_CHILDREN_PER_STEP": 10000,
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
    # task_validate_subscriptions starts the validations of this many subscriptions per run of its step,
    # each run its own transaction: a start holds its subscription's row lock until that commits.
    "VALIDATION_BATCH_SIZE": 200,
    # task_clean_up_tasks deletes completed tasks' processes (with their logs) this many days after they
    # finished; completed validations too, except each subscription's newest (its last result). Other
    # workflows' processes are never deleted: they are the audit record of their subscriptions.
    "TASK_RETENTION_DAYS": 30,
    # ... in batches of this many processes per delete statement (one statement for all would fail past
    # PostgreSQL's 65,535 parameters).
    "CLEANUP_BATCH_SIZE": 1000,
    # ... and idempotency keys this many hours after their request (never fewer than 24: a client may
    # repeat a start with the same key for a day).
    "IDEMPOTENCY_KEY_RETENTION_HOURS": 24,
    # The step log keeps each step's changes; the whole state is written again (a snapshot) once the changes
    # since the last snapshot add up to 8 times its size, and after this many rows at the latest: reading
    # a process's state back reads at most this many rows (in one query).
    "STATE_SNAPSHOT_MAX_ROWS": 500,
    # The process detail (API and admin) shows this many of the newest steps; earlier ones are a page away.
    "STEPS_PAGE_SIZE": 50,
    # The largest request body the API accepts, in bytes; a larger one is answered 413.
    "API_MAX_BODY_BYTES": 1024 * 1024,
    # SQLite only (one writer at a time): how long a web request waits for the database's write lock, held
    # by another write such as a running step, before it answers 503 with Retry-After. Shorter than the
    # 20 s the engine's own threads wait: a person or client is better told at once that the database is
    # busy than kept waiting for a failure. PostgreSQL locks rows and ignores this.
    "SQLITE_REQUEST_LOCK_WAIT_SECONDS": 5.0,
    # Live admin pages check for changes by themselves, without a reload (processes/live.py): a process page
    # (and the process list) showing a process that moves on by itself (running) every LIVE_POLL_SECONDS, one
    # that waits for the sweep or a callback (waiting, awaiting callback) every LIVE_POLL_WAITING_SECONDS,
    # others not at all; the counts per status (admin index, process list) every LIVE_COUNTS_SECONDS while
    # some process is unfinished, every LIVE_COUNTS_IDLE_SECONDS otherwise. 0 turns that check off.
    "LIVE_POLL_SECONDS": 2.0,
    "LIVE_POLL_WAITING_SECONDS": 10.0,
    "LIVE_COUNTS_SECONDS": 10.0,
    "LIVE_COUNTS_IDLE_SECONDS": 60.0,
    # An API token issued by `manage.py create_api_token` expires this many days after it was issued, unless
    # the command is given another expiry (--expires-in DAYS, or "never").
    "API_TOKEN_EXPIRY_DAYS": 90,
    # A client address that sent API_BAD_TOKEN_LIMIT requests with a wrong, expired or revoked token within
    # API_BAD_TOKEN_WINDOW_SECONDS of the first is refused (429, with Retry-After) for every request with a
    # token, right or wrong, for API_BAD_TOKEN_WINDOW_SECONDS more; then it starts counting anew. Counted in
    # the database: every web process sees the same count.
    "API_BAD_TOKEN_LIMIT": 10,
    "API_BAD_TOKEN_WINDOW_SECONDS": 300,
    # How many proxies in front of the app add the client's address to X-Forwarded-For. 0: the header is
    # ignored (anyone can send it) and the client address is the connection's. N: the address the N-th proxy
    # from the app saw, counting X-Forwarded-For from its right end. Used by the API's bad-token throttle and
    # the admin's login lock-out: with a proxy in front and 0 here, every client has the proxy's address.
    "TRUSTED_PROXY_COUNT": 0,
    # The most items one page of an API list may hold (?limit=), whatever the client asks.
    "API_MAX_PAGE_SIZE": 500,
    # API and admin lists count their matching rows up to this many and no further: a count reads every
    # row it counts (a million for a large process table, on every page). Beyond it the API answers
    # `"count_exact": false` with a lower bound, the admin "more than N"; the pages go on (`next`) either way.
    "LIST_COUNT_LIMIT": 10_000,
    # The deepest nesting of arrays and objects accepted in an API request body and in a workflow's input
    # (from the API, the command line or the admin); deeper is refused as invalid input. Input ends up in
    # the process state (jsonb), which every later step, page and log row reads back.
    "JSON_MAX_DEPTH": 32,
    # A callback step whose external system has not called back within this many seconds fails (the
    # scheduler's sweep sees to it), unless the step sets a timeout of its own; a retry asks again.
    "CALLBACK_TIMEOUT_SECONDS": 3600.0,
    # The address external systems reach this orchestrator at: callback URLs handed to them start with it.
    # Empty: "http://localhost:8000" (the address `make run` serves).
    "CALLBACK_BASE_URL": "",
    # The most progress messages one callback keeps; later ones are refused (409), and the longest kept.
    "CALLBACK_PROGRESS_MAX": 1000,
    "CALLBACK_PROGRESS_MAX_CHARS": 2000,
    # The node demo's stand-in provisioning system (workflows/node/provisioning.py): "" (off: the
    # create_node workflow skips its "Deploy node configuration" step), or "http" (a thread of this process
    # answers the callback after NODE_PROVISIONING_DELAY_SECONDS, by POSTing to its URL like a real one).
    "NODE_PROVISIONING": "",
    "NODE_PROVISIONING_DELAY_SECONDS": 3.0,
    # Notify on failure: when a process fails (a step, a retrystep out of tries, the engine giving up, a
    # callback deadline that passed), POST a JSON body to NOTIFY_WEBHOOK_URL ("": no webhook) and/or send an
    # email to NOTIFY_EMAILS (empty: no email; sent with Django's EMAIL_* settings, from DEFAULT_FROM_EMAIL).
    # Both off by default. Each is written to an outbox with the failure (never sent for a failure that
    # rolled back), sent once it commits, and by the scheduler's tick when that did not work.
    "NOTIFY_WEBHOOK_URL": "",
    "NOTIFY_EMAILS": (),
    # How long one send may take (the webhook's connection and each read; the mail server's connection).
    "NOTIFY_TIMEOUT_SECONDS": 10.0,
    # A send that failed (refused, timed out, an answer other than 2xx) is tried again after BACKOFF seconds,
    # twice as long each time (at most BACKOFF_MAX), until it was tried MAX_TRIES times; then it is given up,
    # with an error in the log. With the defaults: for about an hour.
    "NOTIFY_MAX_TRIES": 8,
    "NOTIFY_BACKOFF_SECONDS": 30.0,
    "NOTIFY_BACKOFF_MAX_SECONDS": 1800.0,
    # task_clean_up_tasks deletes notifications sent or given up this many days ago.
    "NOTIFY_RETENTION_DAYS": 30,
    # Who may read GET /metrics (Prometheus text; processes/metrics_access.py). With METRICS_TOKEN set, a
    # request must carry `Authorization: Bearer <token>`. With METRICS_ALLOWED_IPS set (addresses or CIDR
    # networks, e.g. ("10.0.0.0/8", "::1"); from the environment "10.0.0.0/8,::1"), it must come from one
    # of them (the connection's address, REMOTE_ADDR: behind a proxy, the proxy's). Both set: both must
    # hold. Neither set: only from this machine (127.0.0.0/8 and ::1). Others get 403 or 401.
    "METRICS_TOKEN": "",
    "METRICS_ALLOWED_IPS": (),
    # Whether /api/health/ answers 503 when the scheduler has not completed a tick lately: "auto" (when this
    # process runs it, EMBEDDED_SCHEDULER: a restart of the process mends it; a separate `run_scheduler` is
    # reported, not required, so that it stopping does not take every web server out), True or False.
    # Lately: within SCHEDULER_STALE_SECONDS, and never less than 3 sweep intervals.
    "SCHEDULER_REQUIRED": "auto",
    "SCHEDULER_STALE_SECONDS": 60.0,
    # How long /api/health/ waits for the broker (EXECUTOR "celery") before it says it is unavailable.
    "HEALTH_BROKER_TIMEOUT_SECONDS": 1.0,
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
