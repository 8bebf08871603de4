"""Timers: a process waits for a moment in status `waiting`, holding no worker, and the sweep wakes it then."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from processes.engine_settings import set_engine_paused
from processes.errors import WrongProcessStatus
from processes.models import ProcessLease
from processes.scheduler import tick
from processes.services import retry_process, skip_step, start_process
from tests.processes import wait_flows
from tests.processes.conftest import effects, log

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def window():
    """The timer workflow's maintenance window opens an hour from now."""
    moment = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    wait_flows.WINDOW["start"] = moment.isoformat()
    yield moment
    wait_flows.WINDOW["start"] = ""


def test_a_timer_wakes_the_process_at_its_moment_and_not_before(window, api):
    process = start_process("t_timer", by="alice")

    assert process.status == "waiting"
    assert process.failed_reason == ""
    assert process.next_retry_at == window
    assert log(process)[-1] == ("Wait for the maintenance window", "waiting")
    assert not ProcessLease.objects.filter(process=process).exists()  # no worker holds it
    waiting = api.get(f"/api/processes/{process.process_id}/").json()["waiting_for"]
    assert waiting["kind"] == "timer" and waiting["step"] == "Wait for the maintenance window"

    early = tick(now=window - timedelta(seconds=1))

    assert early.woken == [] and early.retried == []
    process.refresh_from_db()
    assert process.status == "waiting"
    assert effects(f"window-{process.process_id}") == []

    on_time = tick(now=window)

    assert on_time.woken == [process.process_id]
    assert on_time.retried == []  # a timer is not a failed step's retry
    process.refresh_from_db()
    assert process.status == "completed"
    assert process.acting_user == "alice"  # the steps after the timer still run for who started it
    assert effects(f"window-{process.process_id}") == [f"window-{process.process_id}"]
    assert [name for name, _ in log(process)] == ["Start", "Plan the window", "Wait for the maintenance window",
                                                  "Change in the window", "Done"]
    assert tick(now=window + timedelta(seconds=5)).woken == []  # woken once


def test_a_moment_already_past_does_not_wait():
    wait_flows.WINDOW["start"] = (timezone.now() - timedelta(minutes=1)).isoformat()
    try:
        process = start_process("t_timer")
    finally:
        wait_flows.WINDOW["start"] = ""

    assert process.status == "completed"
    assert ("Wait for the maintenance window", "success") in log(process)


def test_a_moment_without_a_time_zone_fails_the_step_saying_why():
    wait_flows.WINDOW["start"] = "2030-01-01T02:00:00"
    try:
        process = start_process("t_timer")
    finally:
        wait_flows.WINDOW["start"] = ""

    assert process.status == "failed"
    assert "without a time zone" in process.failed_reason


def test_sleep_waits_its_duration_from_the_moment_the_step_ran():
    before = timezone.now()
    process = start_process("t_sleep")

    assert process.status == "waiting"
    assert log(process)[-1] == ("Wait 5 min", "waiting")
    assert before + timedelta(minutes=5) <= process.next_retry_at <= timezone.now() + timedelta(minutes=5)
    assert tick(now=process.next_retry_at - timedelta(seconds=1)).woken == []
    assert tick(now=process.next_retry_at).woken == [process.process_id]
    process.refresh_from_db()
    assert process.status == "completed"


def test_a_paused_engine_wakes_no_timer_until_it_is_resumed(window):
    process = start_process("t_timer")
    set_engine_paused(True)

    assert tick(now=window + timedelta(seconds=1)).woken == []

    set_engine_paused(False)
    assert tick(now=window + timedelta(seconds=2)).woken == [process.process_id]


def test_retry_wakes_a_timer_now_and_skip_is_refused_since_no_step_failed(window):
    process = start_process("t_timer")

    with pytest.raises(WrongProcessStatus, match="waits for a timer"):
        skip_step(process.process_id, by="bob", reason="not needed")

    retried = retry_process(process.process_id, by="bob")

    retried.refresh_from_db()
    assert retried.status == "completed"
    assert effects(f"window-{process.process_id}") == [f"window-{process.process_id}"]
