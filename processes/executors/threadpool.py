"""The thread pool executor: runs processes in a bounded pool of threads inside this (web) process."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection

from orchestrator_site import logcontext
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
        if wait:
            _close_kept_connections(pool)
        pool.shutdown(wait=wait)


def _close_kept_connections(pool: ThreadPoolExecutor) -> None:
    """Have each thread close the connection it kept while idle (a thread's connection is its own to close).

    One job per thread: each waits at a barrier until every thread holds one, so no thread takes two.
    """
    threads = len(getattr(pool, "_threads", ()))
    if not threads:
        return
    barrier = threading.Barrier(threads)

    def close() -> None:
        # A thread still busy with a process breaks the wait: it closes its own after that process.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        connection.close()

    for _ in range(threads):
        pool.submit(close)


def _keeps_connections() -> bool:
    return connection.settings_dict.get("CONN_MAX_AGE") != 0


def _run(process_id: uuid.UUID | str, request_id: str | None = None) -> None:
    # The run's lines carry the id of the request that handed it over. Only that id is passed: a pool thread
    # starts from an empty context, and copying the request's whole context would bring along what Django
    # keeps per request in contextvars (its URLconf, its cache connections) into a thread that outlives it.
    context = logcontext.bind_request_id(request_id)
    try:
        _run_here(process_id)
    finally:
        logcontext.reset_request_id(context)


def _run_here(process_id: uuid.UUID | str) -> None:
    # Each pool thread has its own database connection. It is kept from one job to the next, checked before
    # use (opening one costs more than a short process's steps). Once the queue is empty it is kept as a
    # web request thread keeps its own (CONN_MAX_AGE: replaced when older at the next job; with 0, closed
    # then, so idle threads hold none).
    if _keeps_connections():
        connection.close_if_unusable_or_obsolete()  # older than CONN_MAX_AGE: replaced, as at a request's start
    keep_healthy_connection()
    try:
        run_process(process_id)
    except Exception:
        # A future nobody waits on would swallow the exception: log it. (Step failures never get here:
        # the engine records them; this is the database or a bug.)
        logger.exception("process %s: the thread pool's run failed", process_id)
        connection.close()  # after a database error or a bug, start the next job on a fresh connection
    finally:
        if _queue_empty() and not _keeps_connections():
            connection.close()


def _queue_empty() -> bool:
    pool = _pool
    # The pool's own queue of jobs not yet taken by a thread (CPython's ThreadPoolExecutor keeps it there).
    queue = getattr(pool, "_work_queue", None)
    return pool is None or queue is None or queue.qsize() == 0


class ThreadpoolExecutor:
    def submit(self, process_id: uuid.UUID) -> Future[None]:
        return get_pool().submit(_run, process_id, logcontext.request_id())
