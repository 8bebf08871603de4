"""`manage.py bench_http [--requests N] [--steps M] [--executor threadpool]`: starts and polls over real HTTP.

Serves the site from this process on a loopback port (wsgiref, with a fixed pool of request threads as a
threaded production server has them, so a thread can keep its database connection), then, N times one
after the other: POST /api/processes/ to start an M-step workflow, and GET /api/processes/{id}/ until it is
completed. Prints p50 and p95 of that whole round trip, and the database connections opened per start,
once with CONN_MAX_AGE=0 (a connection per request) and once with connections kept (CONN_MAX_AGE=60).
Removes its processes, workflow row and user at the end, whatever happens.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.db.backends.signals import connection_created
from django.test.utils import override_settings

from processes.bench_workflow import declare_bench_workflow
from processes.engine import engine_paused
from processes.executors import threadpool
from processes.management.commands._base import OneLineCommand, Seconds, WholeNumber
from processes.models import Process
from subscriptions import api_tokens
from workflows.models import Workflow
from workflows.registry import WorkflowSpec, unregister

logger = logging.getLogger(__name__)

USERNAME = "bench-http"
# (label, CONN_MAX_AGE): what the figures compare.
MODES = [("CONN_MAX_AGE=0 (a connection per request)", 0), ("CONN_MAX_AGE=60 (connections kept)", 60)]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request on stderr: the figures are the output."""


class PooledWSGIServer(WSGIServer):
    """wsgiref's server with each request handled by one of `threads` long-lived threads.

    Like a threaded production server (gunicorn's gthread workers), and unlike runserver (a new thread per
    request), a thread outlives its request, so it can keep its database connection for the next one.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], threads: int) -> None:
        super().__init__(address, _QuietHandler)
        self._requests: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"bench-http-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._requests.put((request, client_address))

    def _work(self) -> None:
        try:
            while (item := self._requests.get()) is not None:
                request, client_address = item
                try:
                    self.finish_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    self.shutdown_request(request)
        finally:
            connections.close_all()  # this thread's connections, kept or not, end with it

    def stop(self) -> None:
        self.shutdown()
        for _ in self._threads:
            self._requests.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self.server_close()


@contextmanager
def serving(threads: int) -> Iterator[tuple[str, int]]:
    """The site on 127.0.0.1 (a free port) until the block ends."""
    server = PooledWSGIServer(("127.0.0.1", 0), threads)
    server.set_app(WSGIHandler())
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield server.server_address[:2]
    finally:
        server.stop()
        loop.join(timeout=10)


class _Counter:
    """Database connections opened, by any thread (Django's connection_created signal)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **kwargs: Any) -> None:
        with self._lock:
            self.count += 1


class Command(OneLineCommand):
    help = "Time a start (POST) and its polls (GET) until completed, over HTTP, with and without kept connections."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--requests", type=WholeNumber(3, 100_000), default=50,
                            help="Timed starts per mode, one after the other (after two untimed).")
        parser.add_argument("--steps", type=WholeNumber(1, 1000), default=10, help="Steps of the workflow.")
        parser.add_argument("--executor", choices=["threadpool", "inline"], default="threadpool",
                            help="threadpool (default): the POST answers at once and the GETs poll; inline: "
                                 "the POST runs the process to its end.")
        parser.add_argument("--threads", type=WholeNumber(1, 64), default=4, help="Request threads of the server.")
        parser.add_argument("--poll", type=Seconds(1.0), default=0.005, help="Seconds between two GETs.")
        parser.add_argument("--timeout", type=Seconds(600.0), default=60.0,
                            help="Seconds one process may take before the command gives up.")

    def handle(self, *args: Any, **options: Any) -> None:
        requests = WholeNumber(3, 100_000).check("--requests", options["requests"])
        steps = WholeNumber(1, 1000).check("--steps", options["steps"])
        threads = WholeNumber(1, 64).check("--threads", options["threads"])
        poll = Seconds(1.0).check("--poll", options["poll"])
        timeout = Seconds(600.0).check("--timeout", options["timeout"])
        executor = str(options["executor"])
        if engine_paused():
            raise CommandError("the engine is paused: resume it (admin, engine settings) before benchmarking it")
        out = self.stdout
        db = connections["default"].settings_dict
        out.write(f"database:  {connections['default'].vendor} {db['NAME']}")
        spec = declare_bench_workflow(steps)
        created: list[str] = []
        results: list[tuple[str, list[float], float]] = []
        user, token = self._user()
        counter = _Counter()
        kept = db.get("CONN_MAX_AGE", 0)
        previous_disable = logging.root.manager.disable
        logging.disable(max(previous_disable, logging.INFO))  # no line per started process
        connection_created.connect(counter, weak=False)
        try:
            orchestrator = {**getattr(settings, "ORCHESTRATOR", {}), "EXECUTOR": executor}
            with override_settings(DEBUG=False, ORCHESTRATOR=orchestrator):
                for label, max_age in MODES:
                    db["CONN_MAX_AGE"] = max_age
                    with serving(threads) as (host, port):
                        client = _Client(host, port, token, poll, timeout)
                        for _ in range(2):  # untimed: the server's threads, caches, the workflow row
                            created.append(client.start_and_wait(spec.name)[0])
                        counter.count = 0
                        took = []
                        for _ in range(requests):
                            process_id, seconds = client.start_and_wait(spec.name)
                            created.append(process_id)
                            took.append(seconds * 1000)
                        results.append((label, took, counter.count / requests))
                    threadpool.shutdown()
                    out.write(f"uptime:    {_uptime()}")
        finally:
            connection_created.disconnect(counter)
            db["CONN_MAX_AGE"] = kept
            logging.disable(previous_disable)
            threadpool.shutdown()
            self._clean_up(spec, created, user)
        self._report(results, requests, steps, executor, threads, poll)

    def _report(self, results: list[tuple[str, list[float], float]], requests: int, steps: int, executor: str,
                threads: int, poll: float) -> None:
        out = self.stdout
        out.write(f"server:    wsgiref on 127.0.0.1, {threads} request threads; executor {executor}; workflow of "
                  f"{steps} steps")
        out.write(f"timing:    p50 / p95 of {requests} starts, each POST /api/processes/ then GET every "
                  f"{poll * 1000:g} ms until completed, in ms; database connections opened per start")
        for label, took, opened in results:
            out.write(f"  {label:<45}{_p50(took):>9.1f} / {_p95(took):>7.1f}   {opened:>6.1f} connections")
        (_, without, _), (_, with_reuse, _) = results
        out.write(f"ratio:     p50 kept / per request {_p50(with_reuse) / _p50(without):.2f}, "
                  f"p95 {_p95(with_reuse) / _p95(without):.2f}")
        out.write("removed:   the benchmark's processes, workflow row and user")

    @staticmethod
    def _user() -> tuple[Any, str]:
        user, _ = get_user_model().objects.get_or_create(
            username=USERNAME, defaults={"is_staff": True, "is_superuser": True})
        # A day is plenty for a benchmark; the token goes with the user at the end (_clean_up).
        return user, api_tokens.create_token(USERNAME, timedelta(days=1)).key

    @staticmethod
    def _clean_up(spec: WorkflowSpec, created: list[str], user: Any) -> None:
        for first in range(0, len(created), 500):
            Process.objects.filter(pk__in=created[first:first + 500]).delete()
        if not Process.objects.filter(workflow__name=spec.name).exists():
            Workflow.objects.filter(name=spec.name).delete()
        unregister(spec.name)
        user.delete()


class _Client:
    """One benchmark client: a new HTTP connection per request, as simple clients make them."""

    def __init__(self, host: str, port: int, token: str, poll: float, timeout: float) -> None:
        self.host, self.port, self.poll, self.timeout = host, port, poll, timeout
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
                        "Accept": "application/json", "Host": "127.0.0.1"}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data or b"{}")
        except ValueError:
            return response.status, {"detail": data[:300].decode(errors="replace")}

    def start_and_wait(self, workflow: str) -> tuple[str, float]:
        """Start the workflow, poll until its process is completed: (its id, seconds from POST to completed)."""
        started = time.perf_counter()
        status, body = self._call("POST", "/api/processes/", {"workflow": workflow})
        if status != 201:
            raise CommandError(f"POST /api/processes/ answered {status}: {body.get('detail', body)}")
        process_id = str(body["id"])
        state = body["status"]
        while state != "completed":
            if state in ("failed", "aborted", "waiting"):
                raise CommandError(f"process {process_id} ended {state}, not completed")
            if time.perf_counter() - started > self.timeout:
                raise CommandError(f"process {process_id} did not complete within {self.timeout:g} s ({state})")
            time.sleep(self.poll)
            status, body = self._call("GET", f"/api/processes/{uuid.UUID(process_id)}/")
            if status != 200:
                raise CommandError(f"GET /api/processes/{process_id}/ answered {status}: {body.get('detail', body)}")
            state = body["status"]
        return process_id, time.perf_counter() - started


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"
