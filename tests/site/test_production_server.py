"""The production profile served as `make serve` serves it: gunicorn, WhiteNoise, HTTPS through a TLS proxy.

One gunicorn is started for the whole module (the `production_server` fixture) on the test database, with
the static files collected into a temporary STATIC_ROOT; every test talks to it over HTTP on a loopback port
as the TLS proxy in front of it would (`X-Forwarded-Proto: https`). To check something more against the
running server, take the fixture and call `production_server.get(...)`, or `production_server.browser()` for a
client that keeps cookies. The module's tests are transactional, so what a test creates is committed and
the server sees it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from django.db import connection

from orchestrator_site.database_url import postgres_url

ROOT = Path(__file__).resolve().parents[2]
BOOT_SECONDS = 60.0  # a loaded 2-core machine; it usually answers within a few seconds
REQUEST_SECONDS = 15.0
STOP_SECONDS = 10.0

# Every test here as a transactional one, whether it writes or not: pytest-django runs those together, so the
# tests of this module stay together and the server is started once.
pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]


# --- The running server ------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class ProductionServer:
    """A gunicorn started by the `production_server` fixture; requests to it as through the TLS proxy."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def https_origin(self) -> str:
        """The origin the site has for a browser: the proxy's https:// in front of this address."""
        return f"https://{self.host}:{self.port}"

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                https: bool = True) -> Answer:
        """One request, no redirect followed; `https` adds the proxy's `X-Forwarded-Proto: https`."""
        sent = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if https:
            sent["X-Forwarded-Proto"] = "https"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_SECONDS)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: object) -> Answer:
        return self.request("GET", path, **kwargs)  # type: ignore[arg-type]

    def browser(self) -> Browser:
        return Browser(self)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Browser:
    """Keeps cookies as a browser does. By hand: http.cookiejar would not send the production profile's
    Secure cookies over the plain-HTTP hop from the proxy to gunicorn."""

    server: ProductionServer
    cookies: dict[str, str] = field(default_factory=dict)
    secure_cookies: set[str] = field(default_factory=set)

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        answer = self.server.request(method, path, body=body, headers=sent)
        for line in answer.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(line).items():
                self.cookies[name] = morsel.value
                if morsel["secure"]:
                    self.secure_cookies.add(name)
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post_form(self, path: str, form: dict[str, str]) -> Answer:
        """A form POST as the browser sends it from this site's page (Origin and Referer: Django's CSRF check)."""
        return self.request("POST", path, body=urlencode(form).encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self.server.https_origin,
            "Referer": f"{self.server.https_origin}{path}",
        })


def database_url() -> str:
    """The test database (this test process's own, with pytest-xdist) as a DATABASE_URL for the server, over TCP
    or the embedded server's Unix socket alike."""
    return postgres_url(connection.settings_dict)


def server_environment(static_root: Path, bind: str) -> dict[str, str]:
    """What `make serve` sets, on the test database; anything the tests' own environment set for Django is dropped."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith(("DJANGO_", "ORCHESTRATOR_", "GUNICORN_", "SECURE_"))
                 and name not in {"DEBUG", "ALLOWED_HOSTS", "SECRET_KEY", "DATABASE_URL", "STATIC_ROOT",
                                  "WEB_CONCURRENCY", "CSRF_TRUSTED_ORIGINS"}}
    return {
        **inherited,
        "DJANGO_ENV": "production",
        "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url(),
        "STATIC_ROOT": str(static_root),
        # The proxy in front says which requests came in over HTTPS.
        "SECURE_PROXY_SSL_HEADER": "true",
        "GUNICORN_BIND": bind,
        "GUNICORN_WORKERS": "1",  # one is enough to check; each one more costs a Django start-up
        "GUNICORN_THREADS": "4",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        # `make serve`'s executor, but not its embedded scheduler: a tick would start the scheduled tasks (a
        # period missed is made up) in the test database while the tests look at it.
        "ORCHESTRATOR_EXECUTOR": "threadpool",
        # As a log collector reads them: every line the server writes (gunicorn's and Django's) is checked.
        "LOG_FORMAT": "json",
        # Behind one proxy, which says who the client is (X-Forwarded-For): the bad-token throttle counts per
        # client, so the throttling test's "attacker" is not this test's own loopback address.
        "ORCHESTRATOR_TRUSTED_PROXY_COUNT": "1",
        "ORCHESTRATOR_API_BAD_TOKEN_LIMIT": "3",
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop); SIGKILL to its whole process group if it is not gone in time."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_SECONDS)
    # The master and its workers: started in a session of their own, so this group is theirs alone.
    with contextlib.suppress(ProcessLookupError):  # none left: the usual case after a graceful stop
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_SECONDS)


def _wait_until_it_answers(server: ProductionServer) -> None:
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode} before answering:\n{server.log_tail()}")
        try:
            if server.get("/api/health/").status == 200:
                return
        except OSError:  # not listening yet (refused), or a worker still starting (reset)
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer /api/health/ within {BOOT_SECONDS:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def serving(folder: Path, **overrides: str) -> Iterator[ProductionServer]:
    """gunicorn in the production profile on the test database (static files collected into `folder`), until the
    block ends; `overrides` go into its environment."""
    static_root = folder / "static"
    # A loopback socket bound here and handed to gunicorn (fd://): no free port to guess, none to lose.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {**server_environment(static_root, f"fd://{listener.fileno()}"), **overrides}
    if not (static_root / "staticfiles.json").is_file():
        collected = subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=ROOT,
                                   env=env, capture_output=True, text=True, timeout=120, check=False)
        assert collected.returncode == 0, collected.stderr
        assert (static_root / "staticfiles.json").is_file()  # the manifest of the hashed names

    log = folder / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "orchestrator_site/gunicorn_conf.py"], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, pass_fds=[listener.fileno()], start_new_session=True,
        )
    listener.close()  # gunicorn has its own copy now
    server = ProductionServer("127.0.0.1", port, process, log)
    try:
        _wait_until_it_answers(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def production_server(django_db_setup, tmp_path_factory) -> Iterator[ProductionServer]:
    # On PostgreSQL only: the module is marked requires_postgres (skipped, or failed under CI, before this runs).
    with serving(tmp_path_factory.mktemp("production-server")) as server:
        yield server


# --- Data the server is to see (committed: transactional_db) -----------------------------------------
PASSWORD = "a long enough password for the admin"


def create_staff_user(username: str = "operator"):
    """A staff superuser whose password the server's own hasher (PBKDF2) checks: the suite's fast test hasher
    (tests/conftest.py) is not one the production profile knows."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from tests.factories import UserFactory

    user = UserFactory(username=username, is_staff=True, is_superuser=True)
    hasher = PBKDF2PasswordHasher()
    # Few iterations keep the test quick; the server re-hashes it at the full count on login, as after an upgrade.
    user.password = hasher.encode(PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


def api_authorization(user) -> str:
    """The Authorization header an API client sends as `user`: the one place that knows how tokens are made."""
    from tests.factories import api_token

    return f"Token {api_token(user)}"


class Assets(HTMLParser):
    """What a page loads: (tag and rel, URL) for every script source and link href."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.found.append(("script", found["src"] or ""))
        elif tag == "link" and found.get("href"):
            self.found.append((f"link {found.get('rel') or ''}".strip(), found["href"] or ""))


def form_field(html: str, name: str) -> str:
    match = re.search(rf'name="{re.escape(name)}" value="([^"]+)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


# --- What the production server does ------------------------------------------------------------------
def test_the_admin_stylesheets_are_served_compressed_under_hashed_names(production_server):
    login = production_server.get("/admin/login/")
    assert login.status == 200, production_server.log_tail()
    stylesheets = [url for kind, url in Assets(login.text).found if kind == "link stylesheet"]
    base = [url for url in stylesheets if "/admin/css/base." in url]
    assert len(base) == 1, stylesheets
    assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", base[0])  # the manifest's hashed name

    for url in stylesheets:
        css = production_server.get(url, headers={"Accept-Encoding": "gzip"})
        assert css.status == 200, url
        assert css.header("Content-Type").startswith("text/css"), (url, css.header("Content-Type"))
        assert css.header("Content-Encoding") == "gzip", url
        assert "immutable" in css.header("Cache-Control"), url  # a hashed name never changes: cached for ever
    plain = production_server.get(base[0])
    assert plain.status == 200 and plain.header("Content-Encoding") == ""
    assert b"body" in plain.body


def test_plain_http_is_redirected_to_https_except_the_health_check(production_server):
    redirected = production_server.get("/admin/login/", https=False)
    assert redirected.status == 301
    assert redirected.header("Location") == f"{production_server.https_origin}/admin/login/"

    health = production_server.get("/api/health/", https=False)  # a load balancer's probe, straight to gunicorn
    assert health.status == 200
    assert "Strict-Transport-Security" not in health.headers

    secure = production_server.get("/api/health/")
    assert secure.header("Strict-Transport-Security").startswith("max-age=31536000")


def test_a_staff_user_logs_in_through_the_admin_login_form(production_server):
    user = create_staff_user("night-operator")
    browser = production_server.browser()

    page = browser.get("/admin/login/?next=/admin/")
    assert page.status == 200
    token = form_field(page.text, "csrfmiddlewaretoken")
    assert "csrftoken" in browser.secure_cookies  # production marks its cookies Secure

    wrong = browser.post_form("/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": token, "username": user.username, "password": "not it", "next": "/admin/"})
    assert wrong.status == 200 and "sessionid" not in browser.cookies
    assert "Please enter the correct username and password" in wrong.text

    logged_in = browser.post_form("/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": form_field(wrong.text, "csrfmiddlewaretoken"), "username": user.username,
        "password": PASSWORD, "next": "/admin/"})
    assert logged_in.status == 302, logged_in.text[:2000]
    assert logged_in.header("Location") == "/admin/"
    assert "sessionid" in browser.secure_cookies

    index = browser.get("/admin/")
    assert index.status == 200
    assert f"<strong>{user.username}</strong>" in index.text
    assert "Products, subscriptions and processes" in index.text


def test_the_api_answers_health_and_a_token_authenticated_request(production_server):
    from tests.factories import SubscriptionFactory

    health = production_server.get("/api/health/")
    assert health.status == 200
    assert health.header("Content-Type") == "application/json"
    # No scheduler runs beside this server (none embedded, no run_scheduler): reported, and not required.
    assert health.json() == {"status": "ok", "database": "ok", "engine": "running", "scheduler": "stale",
                             "scheduler_required": False, "scheduler_last_tick_at": None, "broker": "not_used"}

    subscription = SubscriptionFactory(description="seen by the production server")
    url = f"/api/subscriptions/{subscription.subscription_id}/"
    assert production_server.get(url).status == 401  # no token, no data

    answer = production_server.get(url, headers={"Authorization": api_authorization(create_staff_user())})
    assert answer.status == 200, answer.text
    assert answer.header("Content-Type") == "application/json"
    found = answer.json()
    assert (found["id"], found["description"]) == (str(subscription.subscription_id), "seen by the production server")


def test_the_api_docs_and_every_asset_they_load_come_from_this_server(production_server):
    docs = production_server.get("/api/docs/")
    assert docs.status == 200
    assets = Assets(docs.text).found
    assert len(assets) == 4, assets  # Swagger UI's stylesheet, icon and two scripts
    assert all(not urlsplit(url).netloc and url.startswith("/static/") for _, url in assets), assets
    for _kind, url in assets:
        assert production_server.get(url).status == 200, url

    schema = production_server.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert schema.status == 200
    assert schema.json()["info"]["title"] == "Subscription orchestrator API"


def run_to_its_end(server: ProductionServer, workflow: str) -> dict:
    """Start `workflow` through the API and wait until it completed or failed; its API detail."""
    authorization = {"Authorization": api_authorization(create_staff_user()), "Content-Type": "application/json"}
    started = server.request("POST", "/api/processes/", headers=authorization,
                             body=json.dumps({"workflow": workflow}).encode())
    assert started.status == 201, started.text
    url = f"/api/processes/{started.json()['id']}/"

    deadline = time.monotonic() + 30
    process = server.get(url, headers=authorization).json()
    while process["status"] not in {"completed", "failed"} and time.monotonic() < deadline:
        time.sleep(0.1)
        process = server.get(url, headers=authorization).json()
    return process


def test_a_process_started_through_the_api_runs_to_its_end_in_the_web_process(production_server):
    # `make serve`'s default executor: the thread pool of the gunicorn worker that took the request.
    process = run_to_its_end(production_server, "task_clean_up_tasks")

    assert process["status"] == "completed", (process, production_server.log_tail())


def scrape(server: ProductionServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as Prometheus parses it: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = server.get("/metrics")
    assert answer.status == 200, answer.text
    assert answer.header("Content-Type").startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_metrics_parse_as_prometheus_text_and_move_when_a_process_completes(production_server):
    # Scraped from loopback, the default allow-list. The first scrape starts the counting; the run's steps are
    # folded into the totals by the next one.
    workflow = (("workflow", "task_clean_up_tasks"),)
    before = scrape(production_server)

    process = run_to_its_end(production_server, "task_clean_up_tasks")
    assert process["status"] == "completed"
    after = scrape(production_server)

    def moved(name: str, labels: tuple = workflow) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    steps = len(process["steps"]) if "steps" in process else None
    assert moved("orchestrator_process_completions_total") == 1
    assert moved("orchestrator_process_failures_total") == 0
    step_rows = moved("orchestrator_step_duration_seconds_count")
    assert step_rows >= 3 and (steps is None or step_rows == steps)
    assert moved("orchestrator_step_duration_seconds_bucket", (("le", "+Inf"), *workflow)) == step_rows
    assert after[("orchestrator_processes_by_status", (("status", "completed"),))] >= 1
    assert ("orchestrator_scheduler_last_tick_timestamp_seconds", ()) in after


def test_metrics_are_scraped_over_plain_http_from_loopback_whatever_a_forwarded_header_says(production_server):
    # Prometheus scrapes the web process directly, over plain HTTP: no redirect to HTTPS. Only the connection's
    # own address counts against the allow-list (loopback by default), never one a header claims.
    answer = production_server.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, https=False)
    assert answer.status == 200, answer.text
    assert "orchestrator_processes" in answer.text


def test_every_line_the_server_logs_is_json_with_the_request_id_it_answered(production_server):
    answer = production_server.get("/no-such-page/", headers={"X-Request-ID": "prod-log-check-1"})
    assert answer.status == 404
    assert answer.header("X-Request-ID") == "prod-log-check-1"

    # gunicorn's own lines (booting, workers) and Django's alike: one JSON object each, none plain text.
    lines = [line for line in production_server.log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert any(line["logger"].startswith("gunicorn.") for line in parsed)
    not_found = [line for line in parsed if line.get("request_id") == "prod-log-check-1"]
    assert [(line["logger"], line["level"]) for line in not_found] == [("django.request", "WARNING")]
    assert "Not Found: /no-such-page/" in not_found[0]["message"]


def test_repeated_bad_tokens_from_one_client_get_429_with_retry_after_and_other_clients_go_on(production_server):
    from tests.factories import SubscriptionFactory

    url = f"/api/subscriptions/{SubscriptionFactory().subscription_id}/"
    good = api_authorization(create_staff_user("throttle-check"))

    def from_client(address: str, authorization: str) -> Answer:
        return production_server.get(url, headers={"Authorization": authorization, "X-Forwarded-For": address})

    wrong = "Token " + "0" * 64
    assert [from_client("203.0.113.7", wrong).status for _ in range(3)] == [401, 401, 401]
    refused = from_client("203.0.113.7", wrong)

    assert refused.status == 429, refused.text
    assert 0 < int(refused.header("Retry-After")) <= 300
    assert "try again in" in refused.json()["detail"]
    # Blocked is blocked: a right key from that client is refused too (a 200 would tell a guesser it was right).
    assert from_client("203.0.113.7", good).status == 429
    # Everyone else goes on.
    assert from_client("198.51.100.20", good).status == 200


def test_a_callback_token_in_a_url_never_reaches_the_servers_log(production_server):
    # The token in a callback URL's path is the external system's credential: gunicorn's access log and
    # Django's "Not Found" line both log the path, masked.
    token = "SecretCallbackToken-" + secrets.token_urlsafe(16)
    answer = production_server.request(
        "POST", f"/api/processes/00000000-0000-4000-8000-000000000000/callback/{token}/", body=b"{}",
        headers={"Content-Type": "application/json", "X-Request-ID": "callback-log-check"})
    assert answer.status == 404

    deadline = time.monotonic() + 5  # the access line is written after the answer
    log = production_server.log.read_text()
    while "/callback/***/" not in log.split("callback-log-check", 1)[-1] and time.monotonic() < deadline:
        time.sleep(0.1)
        log = production_server.log.read_text()
    assert token not in log
    masked = [json.loads(line) for line in log.splitlines() if "/callback/***/" in line]
    assert {line["logger"] for line in masked} >= {"django.request", "gunicorn.access"}


def test_a_worker_told_to_stop_stops_its_scheduler_and_lets_its_processes_finish(tmp_path_factory):
    # `make serve`'s whole single-machine set-up: the scheduler embedded in the worker. On SIGTERM the worker
    # stops its scheduler first (no tick hands new processes to a pool going away), lets its pool finish, and
    # exits cleanly within the graceful timeout.
    folder = tmp_path_factory.mktemp("stopping-server")
    with serving(folder, ORCHESTRATOR_EMBEDDED_SCHEDULER="true", ORCHESTRATOR_SWEEP_INTERVAL_SECONDS="0.5") as server:
        deadline = time.monotonic() + 20
        while '"embedded scheduler started' not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        server.process.terminate()
        assert server.process.wait(timeout=20) == 0, server.log_tail()

    said = [json.loads(line)["message"] for line in server.log.read_text().splitlines() if line.strip()]
    stopping = [message for message in said if message.startswith("worker stopping")]
    assert stopping == ["worker stopping: the embedded scheduler stopped, the process pool finished"], said[-10:]
