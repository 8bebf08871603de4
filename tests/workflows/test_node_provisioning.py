"""The node demo's stand-in provisioning system: create_node awaits its callback, which the stand-in answers over
HTTP like a real system; with it off, create_node skips the deploy step and completes at once."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from processes.callbacks import deliver
from processes.models import CallbackProgress, CallbackToken, Process, ProcessStep
from processes.services import retry_process, start_process
from subscriptions.models import Subscription
from workflows.node import provisioning
from workflows.node.demo import load_demo_products

DEPLOY = "Deploy node configuration"
BEFORE_DEPLOY = [("Start", "success"), ("Create subscription", "success"), ("Link subscription to process", "success"),
                 ("Construct node model", "success"), ("Allocate loopback in IPAM", "success")]
AFTER_DEPLOY = [("Set subscription active", "success"), ("Resync", "success"), ("Done", "complete")]


def node_input(name: str) -> dict[str, Any]:
    return {"product": "Node", "customer_id": "acme", "node_name": name, "node_role": "core", "inventory_id": 7}


def log(process: Process) -> list[tuple[str, str]]:
    return list(ProcessStep.objects.filter(process=process).order_by("id").values_list("name", "status"))


def final_state(process: Process) -> dict[str, Any]:
    return ProcessStep.objects.filter(process=process).order_by("id").last().state_after()


def wait_for_status(process: Process, status: str, seconds: float = 20.0) -> Process:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.refresh_from_db()
        if process.status == status:
            return process
        time.sleep(0.1)
    raise AssertionError(f"process {process.process_id} is still {process.status} after {seconds} s, not {status}; "
                         f"its log: {log(process)}")


def stand_in_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("node-provisioning-")]


@pytest.fixture
def catalogue(db):
    load_demo_products()


# --- create_node with the stand-in, end to end over HTTP ----------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_create_node_awaits_the_stand_in_which_calls_back_over_http_and_the_process_completes(
        live_server, settings, catalogue):
    settings.ORCHESTRATOR = {"NODE_PROVISIONING": "http", "NODE_PROVISIONING_DELAY_SECONDS": 0.2,
                             "CALLBACK_BASE_URL": live_server.url}

    process = start_process("create_node", user_input=node_input("rtr-http-1"), by="alice")

    assert process.status == "awaiting_callback"
    assert log(process) == [*BEFORE_DEPLOY, (DEPLOY, "awaiting_callback")]
    assert final_state(process)["deploy_requested_for"] == "rtr-http-1"

    wait_for_status(process, "completed")

    assert log(process) == [*BEFORE_DEPLOY, (DEPLOY, "awaiting_callback"), (DEPLOY, "callback"), (DEPLOY, "success"),
                            *AFTER_DEPLOY]
    token = CallbackToken.objects.get(process=process)
    assert token.received_by == "external system"  # through its URL and token, not by hand
    assert token.closed_reason == "answer validated"
    progress = list(CallbackProgress.objects.filter(callback__process=process).values_list("message", flat=True))
    assert progress == ["rendering configuration for rtr-http-1"]
    state = final_state(process)
    lines = len(provisioning.render_configuration("rtr-http-1"))
    assert state["deploy_result"] == {"ok": True, "device": "rtr-http-1", "config_lines": lines}
    assert state["deployed_config_lines"] == lines
    subscription = Subscription.objects.get(process_links__process=process)
    assert (subscription.status, subscription.insync) == ("active", True)


@pytest.mark.django_db(transaction=True)
def test_with_the_stand_in_off_create_node_completes_at_once_and_logs_the_deploy_step_as_skipped(settings, catalogue):
    settings.ORCHESTRATOR = {"NODE_PROVISIONING": ""}
    threads_before = stand_in_threads()

    process = start_process("create_node", user_input=node_input("rtr-off-1"), by="alice")

    assert process.status == "completed"
    assert log(process) == [*BEFORE_DEPLOY, (DEPLOY, "skipped"), *AFTER_DEPLOY]
    # The condition is checked before the callback is asked for: no token, no request to the stand-in.
    assert not CallbackToken.objects.filter(process=process).exists()
    assert "deploy_requested_for" not in final_state(process)
    assert stand_in_threads() == threads_before


@pytest.mark.django_db(transaction=True)
def test_a_deploy_the_provisioning_system_refuses_fails_the_step_and_a_retry_asks_again(
        settings, catalogue, monkeypatch):
    settings.ORCHESTRATOR = {"NODE_PROVISIONING": "http"}
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(provisioning, "request_deploy", lambda node, url, progress: asked.append((node, url)))
    process = start_process("create_node", user_input=node_input("rtr-refused-1"), by="alice")
    assert process.status == "awaiting_callback"

    deliver(process.process_id, None, {"ok": False, "error": "device unreachable"}, by="dave",
            reason="the provisioning system's console showed it")

    process.refresh_from_db()
    assert process.status == "failed"
    assert "the provisioning system did not deploy the configuration: device unreachable" in process.failed_reason
    assert log(process)[-1] == (DEPLOY, "failed")

    assert retry_process(process.process_id, by="bob").status == "awaiting_callback"
    assert [node for node, _ in asked] == ["rtr-refused-1", "rtr-refused-1"]
    assert asked[0][1] != asked[1][1]  # a new token


def test_an_unknown_provisioning_mode_is_refused_by_name(settings):
    settings.ORCHESTRATOR = {"NODE_PROVISIONING": "ssh"}

    with pytest.raises(Exception, match="NODE_PROVISIONING='ssh' is not a provisioning mode"):
        provisioning.enabled()


# --- the stand-in's POSTs ---------------------------------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[str, str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers["Content-Type"], body))
        code = self.answers.pop(0) if self.answers else 200
        payload = json.dumps({"detail": f"answered {code}"}).encode()
        self.send_response(code)
        if code == 503:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.answers, _Recorder.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(provisioning, "POST_BACKOFF_SECONDS", 0.0)


def test_the_stand_in_posts_json_and_tries_again_while_a_step_holds_the_process(recorder, no_backoff, caplog):
    _Recorder.answers = [503, 503]  # what the callback route answers while the asking step still commits
    url = f"{recorder}/api/processes/1/callback/SECRET-TOKEN/"

    with caplog.at_level(logging.INFO, logger=provisioning.__name__):
        assert provisioning._post(url, {"ok": True}, what="answer for rtr-1") is True

    assert _Recorder.received == [("/api/processes/1/callback/SECRET-TOKEN/", "application/json", {"ok": True})] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("got 503" in w and "answered 503" in w for w in warnings)
    assert "SECRET-TOKEN" not in caplog.text  # the token is a credential


@pytest.mark.parametrize("code", [404, 409])
def test_the_stand_in_takes_an_unknown_or_used_token_as_final(recorder, no_backoff, caplog, code):
    _Recorder.answers = [code]

    assert provisioning._post(f"{recorder}/api/processes/1/callback/t/", {"ok": True}, what="answer") is False

    assert len(_Recorder.received) == 1
    assert "refused by" in caplog.text and f"{code} answered {code}" in caplog.text


def test_the_stand_in_gives_up_quietly_when_nothing_listens(no_backoff, caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/processes/1/callback/t/"

    assert provisioning._post(url, {"ok": True}, what="answer") is False

    assert sum("could not reach" in r.getMessage() for r in caplog.records) == provisioning.POST_TRIES
    assert "gave up on the answer" in caplog.text


def test_a_deploy_thread_that_fails_logs_it_and_raises_nothing(monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(provisioning, "_post", broken)

    provisioning._deploy("rtr-1", "http://127.0.0.1:9/cb/", "http://127.0.0.1:9/progress/", 0.0)

    assert "the deploy of rtr-1 failed" in caplog.text and "boom" in caplog.text
