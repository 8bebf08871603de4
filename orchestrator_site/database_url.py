"""DATABASE_URLs: one built from a connection's settings (for subprocesses), and any URL shown without its password."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote


def postgres_url(settings_dict: Mapping[str, Any]) -> str:
    """The DATABASE_URL of a PostgreSQL connection's settings (Django's `connection.settings_dict`).

    A child process given it (a worker a test starts, a benchmark's Celery workers) reaches the same
    database, whether over TCP or, like the embedded quick-start server, over a Unix socket: a socket
    directory goes in the query (`?host=/path`), where its case and slashes survive parsing, which a
    percent-encoded host name does not (URL parsing lowercases host names).
    """
    auth = quote(str(settings_dict.get("USER") or ""), safe="")
    if settings_dict.get("PASSWORD"):
        auth += ":" + quote(str(settings_dict["PASSWORD"]), safe="")
    host = str(settings_dict.get("HOST") or "")
    port = settings_dict.get("PORT") or ""
    query: list[str] = []
    if host.startswith("/"):
        query.append("host=" + quote(host, safe="/"))
        netloc = ""
    else:
        netloc = f"{host or '127.0.0.1'}:{port or 5432}"
    if port and host.startswith("/"):
        query.append(f"port={port}")
    if (settings_dict.get("OPTIONS") or {}).get("server_side_binding") is False:
        query.append("server_side_binding=false")
    name = quote(str(settings_dict.get("NAME") or ""), safe="")
    return f"postgres://{auth + '@' if auth else ''}{netloc}/{name}{'?' + '&'.join(query) if query else ''}"


def without_password(url: str) -> str:
    """The URL with its password replaced by `***`, the rest kept, so a message can show what is wrong with it.

    Also for URLs too malformed to parse: everything between the user name and the last `@` is taken
    for the password (an unescaped `@` or `/` in it must not leave part of it showing), and without an
    `@`, anything after a colon that is not a port number (`postgres://user:secret/db`, the host forgotten).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at == -1:
        netloc, slash, path = rest.partition("/")
        host, colon, port = netloc.partition(":")
        if colon and port and not port.isdigit():
            return f"{scheme}{sep}{host}:***{slash}{path}"
        return url
    user, colon, _password = rest[:at].partition(":")
    if not colon:
        return url
    return f"{scheme}{sep}{user}:***{rest[at:]}"


def running_embedded_url(pgdata: Path, name: str) -> str | None:
    """The URL of database `name` on the embedded PostgreSQL of `pgdata` if that server is running now, else None.

    So that a bare `manage.py createsuperuser` in a second terminal, while `make run` runs, reaches the
    database `make run` shows instead of an empty SQLite file. Read from the server's postmaster.pid
    (line 1 its pid, line 4 its port, line 5 its socket directory) and checked: the process is alive and
    its socket exists. Anything else (no server, a stale file from a crash) gives None.
    """
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), lines[3].strip(), lines[4].strip()
        os.kill(pid, 0)  # raises when no such process
    except (OSError, ValueError, IndexError):
        return None
    if not socket_dir or not Path(socket_dir, f".s.PGSQL.{port}").exists():
        return None
    return postgres_url({"USER": "postgres", "HOST": socket_dir, "PORT": port, "NAME": name})
