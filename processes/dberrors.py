"""Telling a lost database connection (the infrastructure's failure) from a step's own failure, and text
that PostgreSQL can always store."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import connection

logger = logging.getLogger(__name__)

# SQLSTATEs that mean the connection itself is gone or the server is going away: class 08 (connection
# exception), the shutdowns of class 57 (admin_shutdown, crash_shutdown, cannot_connect_now) and
# too_many_connections (a server restarting after a fail-over is often briefly full).
_SHUTDOWN_STATES = {"57P01", "57P02", "57P03", "53300"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def connection_lost(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says the database connection was lost, not that a query failed.

    A step's transaction that ends this way rolled back on the server, whatever the step did: running the
    step again on a new connection is safe, and it is not the step's fault.
    """
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite-only installs lack nothing else
        return False
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError) and connection.connection is None:
        # Raised while (re)connecting: whatever the server said (a restart, a database not accepting
        # connections now), there is no connection, so nothing of a step ran.
        return True
    for error in _chain(exc):
        if isinstance(error, psycopg.InterfaceError):
            return True
        if isinstance(error, psycopg.OperationalError):
            state = error.sqlstate
            # No SQLSTATE: the client noticed it (server closed the connection, connection is closed,
            # cannot connect); the server never answered with an error of its own.
            if state is None or state.startswith("08") or state in _SHUTDOWN_STATES:
                return True
    return False


def drop_connection() -> None:
    """Forget this thread's (broken) connection, so the next query opens a new one."""
    try:
        connection.close()
    except Exception as exc:  # closing a dead connection may itself complain; it is gone either way
        logger.debug("closing the lost database connection: %s", exc)
        connection.connection = None


def storable_text(text: object, limit: int = 20_000) -> str:
    """`text` as PostgreSQL can store it in a text column: no NUL characters, and at most `limit` characters.

    An error message is recorded whatever it holds: a NUL byte or a megabyte of output must not make the
    record of a failure fail too.
    """
    value = str(text).replace("\x00", "\\x00")
    if len(value) > limit:
        value = f"{value[:limit]}… ({len(value) - limit} more characters not kept)"
    return value


def lock_timed_out(exc: BaseException) -> bool:
    """True when `exc` is PostgreSQL's lock_timeout (or NOWAIT) giving up on a row lock another holds."""
    return any(getattr(error, "sqlstate", None) == "55P03" for error in _chain(exc))


def deadlocked(exc: BaseException) -> bool:
    """True when PostgreSQL broke a deadlock by failing this transaction (the other one went on)."""
    return any(getattr(error, "sqlstate", None) == "40P01" for error in _chain(exc))


def keep_healthy_connection() -> None:
    """Keep this thread's open connection if it still works; drop a broken, obsolete or mid-transaction one.

    For runs that reuse a connection from one process to the next (pool threads, Celery workers): a
    check costs one round trip, a new connection many.
    """
    if connection.connection is None:
        return
    if connection.in_atomic_block or connection.needs_rollback or not connection.is_usable():
        connection.close()  # the next query opens a fresh one
