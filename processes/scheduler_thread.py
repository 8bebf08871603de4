"""The embedded scheduler: a daemon thread in the web process calling scheduler.tick() every sweep interval.

Started by ProcessesConfig.ready() when ORCHESTRATOR["EMBEDDED_SCHEDULER"] is true, and only in a process
that serves requests: runserver's autoreloader child (RUN_MAIN=true), `runserver --noreload`, or a process
that loaded orchestrator_site/wsgi.py or asgi.py (they call serve_here() before Django is set up). Never in
manage.py migrate, test, shell... Several web processes may each run one: a tick never does a piece of
work twice. This module imports nothing of the ORM at module level: wsgi.py imports it before setup.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

THREAD_NAME = "orchestrator-scheduler"

_serving = False
_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()


def serve_here() -> None:
    """Mark this OS process as one that serves requests (called by the WSGI and ASGI entry points)."""
    global _serving
    _serving = True


def is_serving_process(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if _serving:
        return True
    runserver = len(argv) > 1 and argv[1] == "runserver"
    # With the autoreloader, runserver's parent only watches files; its child (RUN_MAIN=true) serves.
    return runserver and (environ.get("RUN_MAIN") == "true" or "--noreload" in argv)


def maybe_start() -> bool:
    """Start the thread if the settings ask for it and this process serves requests; True if started."""
    from orchestrator_site.conf import orchestrator_setting

    if not orchestrator_setting("EMBEDDED_SCHEDULER") or not is_serving_process():
        return False
    return start()


def start(interval: float | None = None) -> bool:
    """Start the scheduler thread (once per OS process); False if it is already running."""
    global _thread
    from orchestrator_site.conf import orchestrator_setting
    from processes.scheduler import parse_schedule

    parse_schedule()  # a bad SCHEDULE stops the server from starting, with the setting named
    seconds = float(orchestrator_setting("SWEEP_INTERVAL_SECONDS") if interval is None else interval)
    with _lock:
        if _thread is not None and _thread.is_alive():
            return False
        _stop.clear()
        _thread = threading.Thread(target=_loop, args=(seconds,), name=THREAD_NAME, daemon=True)
        _thread.start()
    logger.info("embedded scheduler started: a tick every %gs", seconds)
    return True


def stop(timeout: float = 10.0) -> None:
    """Stop the thread after its current tick (tests; a daemon thread otherwise ends with the process)."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
    _stop.set()
    if thread is not None:
        thread.join(timeout)


def _loop(interval: float) -> None:
    from django.db import connection

    from processes.scheduler import tick

    # The first tick waits one interval: the server finishes starting first.
    while not _stop.wait(interval):
        try:
            report = tick()
            if report.retried or report.recovered or report.started:
                logger.info("embedded scheduler: %s", report)
        except Exception:  # never let one bad tick end the thread
            logger.exception("embedded scheduler: the tick failed; trying again in %gs", interval)
        finally:
            try:
                connection.close()  # this thread's own connection: no idle connection held between ticks
            except Exception:
                logger.exception("embedded scheduler: could not close its database connection")
