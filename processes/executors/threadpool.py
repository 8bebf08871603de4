"""The thread pool executor: runs processes in a bounded pool of threads inside this (web) process."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection

from orchestrator_site.conf import orchestrator_setting
from processes.dberrors import keep_healthy_connection
from processes.engine import run_process

logger = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def get_pool() -> ThreadPoolExecutor:
    """The process-wide pool, created on first use (so commands and workers that never submit have none)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=int(orchestrator_setting("THREADPOOL_WORKERS")),
                thread_name_prefix="orchestrator-process",
            )
        return _pool


def shutdown(wait: bool = True) -> None:
    """Stop the pool (tests, or a server shutting down); the next submit creates a new one."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait)


def _run(process_id: uuid.UUID | str) -> None:
    # Each pool thread has its own database connection. It is kept from one job to the next while more
    # work waits (opening a connection costs more than a short process's steps), checked before use, and
    # closed once the queue is empty, so idle threads hold no connections open.
    keep_healthy_connection()
    try:
        run_process(process_id)
    except Exception:
        # A future nobody waits on would swallow the exception: log it. (Step failures never get here:
        # the engine records them; this is the database or a bug.)
        logger.exception("process %s: the thread pool's run failed", process_id)
        connection.close()  # after a database error or a bug, start the next job on a fresh connection
    finally:
        if _queue_empty():
            connection.close()


def _queue_empty() -> bool:
    pool = _pool
    # The pool's own queue of jobs not yet taken by a thread (CPython's ThreadPoolExecutor keeps it there).
    queue = getattr(pool, "_work_queue", None)
    return pool is None or queue is None or queue.qsize() == 0


class ThreadpoolExecutor:
    def submit(self, process_id: uuid.UUID) -> Future[None]:
        return get_pool().submit(_run, process_id)
