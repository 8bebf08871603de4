"""A long step holds its own process only: starting another process and logging in go on meanwhile (PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from processes.engine import current_state
from processes.executors import threadpool
from processes.models import Process, ProcessStatus
from processes.services import start_process
from tests.factories import UserFactory
from tests.processes import flows
from tests.processes.test_executors import wait_until

PASSWORD = "correct horse battery staple"  # the factory's


@pytest.fixture
def held_step() -> Iterator[dict[str, threading.Event]]:
    for event in flows.HELD.values():
        event.clear()
    yield flows.HELD
    flows.HELD["release"].set()  # never leave a pool thread waiting, whatever the test did
    threadpool.shutdown(wait=True)
    for event in flows.HELD.values():
        event.clear()


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `work` in a thread of its own (with its own database connection, closed at the end)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target, name=f"test-{work.__name__}")
    thread.start()
    return thread, outcome


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_while_a_step_runs_long_another_process_starts_through_the_api_and_an_operator_logs_in(
    settings, held_step,
):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 2}
    starter = UserFactory(username="starter", is_staff=True, is_superuser=True)
    UserFactory(username="operator", is_staff=True, is_superuser=True)
    long_one = start_process("t_held", by="alice")
    assert held_step["inside"].wait(timeout=30), "the held step never started"

    def start_another() -> Any:
        api = APIClient()
        api.force_authenticate(starter)
        return api.post("/api/processes/", {"workflow": "t_writes"}, format="json")

    def log_in() -> Any:
        # A real login: the form posted with the password, the session written.
        return Client().post("/admin/login/?next=/admin/",
                             {"username": "operator", "password": PASSWORD, "next": "/admin/"})

    started, start_outcome = in_thread(start_another)
    logged_in, login_outcome = in_thread(log_in)
    # Well inside any lock wait (SQLite's is 20 s for the engine, 5 s for a request): a request blocked
    # behind the step would still be waiting here.
    started.join(timeout=60)
    logged_in.join(timeout=60)
    assert not started.is_alive() and not logged_in.is_alive(), "a request waited for the held step"

    # Both answered while the step was still open.
    assert not held_step["release"].is_set()
    assert Process.objects.get(pk=long_one.pk).status == ProcessStatus.RUNNING
    assert "error" not in start_outcome, start_outcome.get("error")
    assert "error" not in login_outcome, login_outcome.get("error")
    started_response = start_outcome["result"]
    assert started_response.status_code == 201, started_response.content
    login_response = login_outcome["result"]
    assert login_response.status_code == 302, login_response.content[:500]
    assert login_response["Location"] == "/admin/"
    another = started_response.json()["id"]
    wait_until(lambda: Process.objects.get(pk=another).status == ProcessStatus.COMPLETED, 30,
               "the other process to complete on the second pool thread")

    held_step["release"].set()
    wait_until(lambda: Process.objects.get(pk=long_one.pk).status == ProcessStatus.COMPLETED, 30,
               "the long process to complete once released")
    assert current_state(long_one.pk)["released"] is True
