"""On SQLite a long step holds the one write lock: other writes are told 503 "busy" (JSON on the API), not a 500.

The suite's own database may be PostgreSQL, and one process cannot switch databases, so this runs the
site in a server subprocess of its own on an SQLite file, with the thread-pool executor like `make run`,
and talks to it over HTTP. Its step (tests/processes/flows.py: write_then_hang) hangs while a file of
the test exists, across the process boundary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long passphrase for the admin 42"

SERVER = """
import sys
import django
django.setup()
import tests.processes.flows  # the test workflows
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from subscriptions.api_tokens import create_token

call_command("migrate", verbosity=0)
user = get_user_model().objects.create_superuser("ops", "ops@example.org", sys.argv[1])
token = create_token(user.username).key
server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
server.set_app(get_wsgi_application())
print(server.server_address[1], token, flush=True)
server.serve_forever()
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Site:
    """The server subprocess, and an HTTP client for it that keeps cookies and does not follow redirects."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "server.log"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}", "DJANGO_ENV": "development",
               "DEBUG": "true", "ORCHESTRATOR_EXECUTOR": "threadpool", "ENGINE_TEST_DIR": str(tmp_path),
               # Short, so the test does not wait the default 5 s for each refusal.
               "ORCHESTRATOR_SQLITE_REQUEST_LOCK_WAIT_SECONDS": "1"}
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, PASSWORD], cwd=ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=self.log.open("w"))
        line = self.process.stdout.readline()  # blocks until it listens, or dies
        assert line, f"the server did not start:\n{self.log.read_text()[-3000:]}"
        port, self.token = line.split()
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), NoRedirects)

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> Answer:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=timeout) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:  # 3xx (not followed), 4xx and 5xx
            return Answer(error.code, dict(error.headers), error.read())

    def api(self, method: str, path: str, data: object = None) -> Answer:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        return self.request(method, path, body=body, headers=headers)

    def log_in(self, username: str, password: str) -> Answer:
        """The admin's login form, as a browser posts it: the CSRF cookie and field from the form first."""
        form = self.request("GET", "/admin/login/?next=/admin/")
        assert form.status == 200, form.body[:500]
        marker = b'name="csrfmiddlewaretoken" value="'
        start = form.body.index(marker) + len(marker)
        csrf = form.body[start:form.body.index(b'"', start)].decode()
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, "username": username, "password": password,
                                       "next": "/admin/"}).encode()
        return self.request("POST", "/admin/login/?next=/admin/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + "/admin/login/"})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    running = Site(tmp_path)
    try:
        yield running
    finally:
        (tmp_path / "all.hang").unlink(missing_ok=True)
        running.stop()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.1)


def test_on_sqlite_writes_during_a_long_step_answer_503_busy_and_go_through_once_it_ends(site, tmp_path):
    hang = tmp_path / "all.hang"
    hang.touch()  # the step hangs, holding SQLite's write lock, while this file exists
    long_one = site.api("POST", "/api/processes/", {"workflow": "t_killable"})
    assert long_one.status == 201, long_one.body[:500]
    process_id = long_one.json()["id"]
    wait_for(lambda: (tmp_path / f"{process_id}.inside").exists(), 60, "the step to hang")

    refused = site.api("POST", "/api/processes/", {"workflow": "t_writes"})
    login = site.log_in("ops", PASSWORD)
    reading = site.api("GET", f"/api/processes/{process_id}/")

    assert refused.status == 503, refused.body[:2000]
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.headers["Retry-After"] == "5"
    assert refused.json() == {"detail": "the database is busy; SQLite allows one writer at a time and another "
                                        "write (such as a long workflow step) holds it: try again shortly, or use "
                                        "PostgreSQL (DATABASE_URL) for concurrent work"}
    assert login.status == 503, login.body[:2000]
    assert login.headers["Content-Type"].startswith("text/html")
    assert login.headers["Retry-After"] == "5"
    assert b"The database is busy" in login.body and b"Traceback" not in login.body
    # Reading goes on (WAL): the long process is still running its step.
    assert reading.status == 200 and reading.json()["status"] == "running"

    hang.unlink()
    wait_for(lambda: site.api("GET", f"/api/processes/{process_id}/").json()["status"] == "completed", 60,
             "the long process to complete")
    assert site.api("POST", "/api/processes/", {"workflow": "t_writes"}).status == 201
    assert site.log_in("ops", PASSWORD).status == 302
