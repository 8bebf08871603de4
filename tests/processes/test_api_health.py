"""GET /api/health/: the scheduler's last tick and the Celery broker, and when they make the service unavailable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from kombu import pools as kombu_pools
from rest_framework.test import APIClient

from orchestrator_site.celery import app as celery_app
from processes.executors import celery as celery_executor
from processes.models import SchedulerTick
from processes.scheduler_ticks import check_scheduler_required, record_tick

pytestmark = pytest.mark.requires_postgres
URL = "/api/health/"
CLOSED_PORT_BROKER = "redis://127.0.0.1:6390/0"  # nothing listens there
TEST_BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")


def get() -> tuple[int, dict]:
    response = APIClient().get(URL)
    assert response["Cache-Control"] == "no-store"
    return response.status_code, response.json()


@pytest.fixture
def broker_at() -> Iterator:
    """Point the Celery app at another broker for one test, forgetting what this process knew of the old one."""
    original = celery_app.conf.broker_url

    def use(url: str) -> None:
        kombu_pools.reset()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        celery_app.conf.broker_url = url
        celery_executor._broker_seen_up.clear()

    yield use
    use(original)


# --- the scheduler -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_required_scheduler_that_never_ticked_makes_the_service_unavailable(settings):
    # "auto": required when the web process runs the scheduler itself (a 503 gets that process restarted).
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "EMBEDDED_SCHEDULER": True}

    status, body = get()

    assert status == 503
    assert body["status"] == "unavailable"
    assert (body["scheduler"], body["scheduler_required"], body["scheduler_last_tick_at"]) == ("stale", True, None)
    assert body["database"] == "ok"


@pytest.mark.django_db
def test_a_scheduler_that_ticked_lately_is_ok(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "EMBEDDED_SCHEDULER": True, "SCHEDULE": {}}
    call_command("run_scheduler", "--once", stdout=StringIO())

    status, body = get()

    assert status == 200
    assert (body["status"], body["scheduler"], body["scheduler_required"]) == ("ok", "ok", True)
    assert body["scheduler_last_tick_at"] == SchedulerTick.objects.get().last_tick_at.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db
def test_a_scheduler_silent_for_longer_than_the_stale_time_is_stale(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "EMBEDDED_SCHEDULER": True, "SCHEDULER_STALE_SECONDS": 60.0,
                             "SWEEP_INTERVAL_SECONDS": 10.0}
    record_tick(now=timezone.now() - timedelta(seconds=50))
    assert get()[1]["scheduler"] == "ok"

    record_tick(now=timezone.now() - timedelta(seconds=70))
    status, body = get()
    assert (status, body["scheduler"]) == (503, "stale")

    # Never less than three sweep intervals: a long interval does not make every pause between ticks stale.
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SWEEP_INTERVAL_SECONDS": 30.0}
    assert get()[1]["scheduler"] == "ok"


@pytest.mark.django_db
def test_a_stale_scheduler_that_is_not_required_is_reported_but_not_unavailable(settings):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "SCHEDULER_REQUIRED": False}

    status, body = get()

    assert status == 200
    assert (body["status"], body["scheduler"], body["scheduler_required"]) == ("ok", "stale", False)


@pytest.mark.django_db
def test_a_scheduler_run_as_a_process_of_its_own_is_reported_not_required_unless_told(settings):
    # run_scheduler elsewhere: its stopping must not take this web server out of service (a 503 here would
    # take every web server out); told to (a health endpoint only the monitoring reads), it is required.
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "EMBEDDED_SCHEDULER": False}
    status, body = get()
    assert (status, body["scheduler"], body["scheduler_required"]) == (200, "stale", False)

    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SCHEDULER_REQUIRED": "true"}
    assert get()[0] == 503


def test_a_scheduler_required_setting_that_is_no_boolean_fails_the_check(settings):
    settings.ORCHESTRATOR = {"SCHEDULER_REQUIRED": "sometimes"}

    assert [error.id for error in check_scheduler_required()] == ["processes.E112"]


# --- the broker --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_broker_that_does_not_answer_makes_the_service_unavailable_with_celery(settings, broker_at):
    settings.ORCHESTRATOR = {"EXECUTOR": "celery", "SCHEDULER_REQUIRED": False}
    broker_at(CLOSED_PORT_BROKER)

    status, body = get()

    assert status == 503
    assert (body["status"], body["broker"], body["database"]) == ("unavailable", "unavailable", "ok")


@pytest.mark.django_db
def test_a_broker_that_answers_is_ok(settings, broker_at):
    settings.ORCHESTRATOR = {"EXECUTOR": "celery", "SCHEDULER_REQUIRED": False}
    broker_at(TEST_BROKER)

    status, body = get()

    assert (status, body["status"], body["broker"]) == (200, "ok", "ok")


@pytest.mark.django_db
def test_the_broker_is_not_asked_without_the_celery_executor(settings, broker_at):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "SCHEDULER_REQUIRED": False}
    broker_at(CLOSED_PORT_BROKER)

    status, body = get()

    assert (status, body["broker"]) == (200, "not_used")
