"""Gunicorn's settings for the web process, read from the environment: `gunicorn -c orchestrator_site/gunicorn_conf.py`.

Every value below can be set from the environment (README, "Deploy"); the defaults suit one machine behind a
TLS proxy. Gunicorn reads this module itself, before Django is set up: it imports nothing of Django's.

Why WSGI and threads (gthread), not ASGI: the admin's live pages poll with short GET requests answered from
the database, with ETags (304 when nothing changed: processes/live.py), and nothing streams or holds a
connection open, so a WSGI server does. Threads, because those polls are many and short and mostly wait on
PostgreSQL; idle keep-alive connections wait in gunicorn's event loop, not in a thread. With the `threadpool`
executor each gunicorn worker process also runs processes in its own pool (THREADPOOL_WORKERS threads).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from orchestrator_site.env import BadEnvironmentValue, env_bool, env_int
from orchestrator_site.logredact import redact


# Gunicorn prints a SystemExit's message alone, where an exception would be a traceback.
def _env_int(name: str, default: int, minimum: int) -> int:
    try:
        return env_int(name, default, minimum)
    except BadEnvironmentValue as exc:
        raise SystemExit(str(exc)) from None


def _env_bool(name: str, default: bool) -> bool:
    try:
        return env_bool(name, default)
    except BadEnvironmentValue as exc:
        raise SystemExit(str(exc)) from None


wsgi_app = "orchestrator_site.wsgi:application"

# GUNICORN_BIND: where to listen, comma-separated for several (`0.0.0.0:8000`, `unix:/run/orchestrator.sock`).
# Loopback by default: a TLS proxy in front of it is the way in (README, "Deploy").
bind = [part.strip() for part in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",") if part.strip()]

# GUNICORN_WORKERS (or the conventional WEB_CONCURRENCY): OS processes serving requests, each with its own
# Django, database connections and, with the `threadpool` executor, its own pool of process threads.
workers = _env_int("GUNICORN_WORKERS", _env_int("WEB_CONCURRENCY", 2, 1), 1)
worker_class = "gthread"
# GUNICORN_THREADS: requests served at once by each worker. Each busy thread holds a database connection
# (kept CONN_MAX_AGE seconds), so PostgreSQL sees up to workers x (threads + THREADPOOL_WORKERS with the
# `threadpool` executor + 1 for the embedded scheduler's tick): keep that under its max_connections.
threads = _env_int("GUNICORN_THREADS", 4, 1)

# GUNICORN_TIMEOUT: a worker whose main loop has not reported for this many seconds is killed and replaced.
# With threads this is not a limit on a request's length (the loop reports while requests run).
timeout = _env_int("GUNICORN_TIMEOUT", 30, 0)
# GUNICORN_GRACEFUL_TIMEOUT: on SIGTERM (or a restart with SIGHUP) workers stop accepting, finish the requests
# in hand (and, with the `threadpool` executor, the steps running in their pool) for up to this many seconds,
# then are killed. A process cut short there is not lost: its lease lapses and the recovery sweep hands it
# over again, from its last successful step (README, "Running processes").
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, 0)
# GUNICORN_KEEPALIVE: seconds an idle HTTP keep-alive connection is kept; longer than gunicorn's 2 so a proxy
# reusing its connections (and a live page polling every 2 s) does not reconnect each time.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5, 0)

# No restarting of workers after N requests: a restart interrupts the processes its pool is running (they
# are recovered, but only after LEASE_SECONDS), and nothing here leaks memory that would call for it.
max_requests = 0
# Each worker imports the application itself after the fork. Preloading in the master would start the
# embedded scheduler's thread (ORCHESTRATOR_EMBEDDED_SCHEDULER) there, and threads do not survive a fork.
preload_app = False

# Logs: the access log to stdout, gunicorn's own messages to stderr (Django's go to stderr too: settings
# LOGGING), for the service manager or container runtime to collect. GUNICORN_ACCESS_LOG=false turns the
# access log off (e.g. when the proxy keeps one).
accesslog = "-" if _env_bool("GUNICORN_ACCESS_LOG", True) else None
errorlog = "-"
loglevel = (os.environ.get("GUNICORN_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "info").strip().lower()

proc_name = "orchestrator-web"

# The workers' heartbeat files in memory when /dev/shm is there (Docker's /tmp may be on a disk or an
# overlay, where the heartbeat's fchmod can stall a worker long enough to be killed).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# Gunicorn's control socket (`gunicornc`) lives at one path per user ($HOME/.gunicorn/gunicorn.ctl), which two
# servers on one machine would fight over: off, unless GUNICORN_CONTROL_SOCKET names a path for this one.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if _control_socket:
    control_socket = _control_socket
    control_socket_disable = False
else:
    control_socket_disable = True

# LOG_FORMAT=json (README, "Logs"): gunicorn's own lines (start, workers booted and stopped, its access log) are
# JSON objects too, in the same format as Django's, so a log collector parses every line the web process writes.
# logformat imports only the standard library and python-json-logger, not Django.
if (os.environ.get("LOG_FORMAT") or "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "orchestrator_site.logformat.JsonFormatter"}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": loglevel.upper(), "propagate": False},
            "gunicorn.access": {"handlers": ["access"] if accesslog else [], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": [], "level": "WARNING"},
    }


class RedactingLogger(Logger):
    """Gunicorn's logger, with callback tokens masked in the access log's request line and path (logredact)."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str) and "/callback/" in value:
                atoms[key] = redact(value)
        return atoms


logger_class = RedactingLogger


def worker_exit(server: Any, worker: Any) -> None:
    """A worker stopping (SIGTERM, a restart, a timeout): its embedded scheduler first, so that no tick hands new
    processes to a pool that is going away, then its process pool, let finish what it runs and has queued
    (within GUNICORN_GRACEFUL_TIMEOUT; a run cut short there is recovered by another scheduler's sweep)."""
    try:
        from processes import scheduler_thread
        from processes.executors import threadpool
    except Exception:  # the application never loaded in this worker: nothing of it runs
        return
    scheduler_thread.stop()
    threadpool.shutdown(wait=True)
    server.log.info("worker stopping: the embedded scheduler stopped, the process pool finished")
