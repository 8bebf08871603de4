"""Callback steps: the process awaits an external system's answer holding no worker, takes it once through its
token, checks it, and fails with the reason when it does not come in time."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from processes.callbacks import deliver
from processes.models import CallbackToken, Process, ProcessLease, ProcessStep
from processes.scheduler import tick
from processes.services import abort_process, retry_process, start_process
from tests.processes.conftest import effects, log
from tests.processes.wait_flows import FakeSystem

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"ok": True, "device": "rtr-1"}


def post(url: str, body: object) -> tuple[int, dict]:
    response = APIClient().post(FakeSystem.path(url), body, format="json")
    return response.status_code, response.json()


def snapshot(process: Process) -> tuple:
    """Everything a refused callback must leave as it was."""
    process.refresh_from_db()
    return (process.status, process.last_modified_at, process.current_step, log(process),
            list(CallbackToken.objects.filter(process=process).values_list("received_at", "closed_at")))


def test_a_callback_step_awaits_holding_no_worker_and_the_answer_completes_the_process(fake_system, api):
    process = start_process("t_callback", by="alice")

    assert process.status == "awaiting_callback"
    assert log(process)[-1] == ("Deploy config", "awaiting_callback")
    assert not ProcessLease.objects.filter(process=process).exists()  # no run holds it
    asked = fake_system.last("deploy")
    assert asked["url"].startswith("http://localhost:8000/api/processes/")
    assert asked["token"] in asked["url"]
    # The token is a credential: neither the state, the log nor the token table hold it in clear.
    assert asked["token"] not in str(list(ProcessStep.objects.filter(process=process).values("state", "delta")))
    assert not CallbackToken.objects.filter(token_hash=asked["token"]).exists()
    detail = api.get(f"/api/processes/{process.process_id}/").json()
    assert detail["waiting_for"]["kind"] == "callback"
    assert detail["waiting_for"]["step"] == "Deploy config"
    assert detail["waiting_for"]["deadline"] is not None

    code, body = post(asked["url"], GOOD)

    assert code == 200, body
    process.refresh_from_db()
    assert process.status == "completed"
    assert log(process) == [("Start", "success"), ("Write A", "success"), ("Deploy config", "awaiting_callback"),
                            ("Deploy config", "callback"), ("Deploy config", "success"), ("Write C", "success"),
                            ("Done", "complete")]
    state = ProcessStep.objects.filter(process=process).order_by("id").last().state_after()
    assert state["deploy_result"] == GOOD
    assert state["deployed_on"] == "rtr-1"
    assert len(effects(f"deploy-{process.process_id}")) == 1  # the action ran once
    assert api.get(f"/api/processes/{process.process_id}/").json()["waiting_for"] is None


def test_two_callback_steps_in_a_row_each_await_their_own_answer(fake_system):
    process = start_process("t_two_callbacks")
    deploy = fake_system.last("deploy")

    assert post(deploy["url"], GOOD)[0] == 200

    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    assert log(process)[-1] == ("Verify config", "awaiting_callback")
    verify = fake_system.last("verify")
    assert verify["url"] != deploy["url"]
    assert post(deploy["url"], GOOD)[0] == 409  # the first token was used

    assert post(verify["url"], {"verified": True})[0] == 200

    process.refresh_from_db()
    assert process.status == "completed"
    state = ProcessStep.objects.filter(process=process).order_by("id").last().state_after()
    assert state["verify_result"] == {"verified": True}


def test_a_wrong_token_is_404_and_changes_nothing(fake_system):
    process = start_process("t_callback")
    url = fake_system.last("deploy")["url"]
    before = snapshot(process)

    for wrong in (url.replace("/callback/", "/callback/x"), url[:-3] + "AAA/"):
        code, body = post(wrong, GOOD)
        assert code == 404, body
        assert "awaits no callback with this token" in body["detail"]
    other = url.replace(str(process.process_id), "00000000-0000-0000-0000-000000000000")
    assert post(other, GOOD)[0] == 404
    assert post(other.replace("00000000-0000-0000-0000-000000000000", "not-a-uuid"), GOOD)[0] == 404

    assert snapshot(process) == before


def test_a_callback_to_a_process_that_awaits_none_is_409(fake_system):
    process = start_process("t_callback")
    url = fake_system.last("deploy")["url"]
    assert post(url, GOOD)[0] == 200
    before = snapshot(process)

    code, body = post(url, GOOD)

    assert code == 409, body
    assert "already delivered" in body["detail"]
    assert snapshot(process) == before


def test_progress_messages_are_shown_and_never_advance_the_process(fake_system, api):
    process = start_process("t_callback")
    asked = fake_system.last("deploy")
    client = APIClient()

    first = client.post(fake_system.path(asked["progress_url"]), {"message": "config rendered"}, format="json")
    second = client.post(fake_system.path(asked["progress_url"]), {"message": "pushing to rtr-1"}, format="json")
    empty = client.post(fake_system.path(asked["progress_url"]), {"message": ""}, format="json")

    assert (first.status_code, second.status_code, empty.status_code) == (201, 201, 400)
    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    waiting = api.get(f"/api/processes/{process.process_id}/").json()["waiting_for"]
    assert [p["message"] for p in waiting["progress"]] == ["config rendered", "pushing to rtr-1"]

    assert post(asked["url"], GOOD)[0] == 200
    late = client.post(fake_system.path(asked["progress_url"]), {"message": "done"}, format="json")
    assert late.status_code == 409


def test_a_bad_answer_fails_the_validate_step_and_a_retry_asks_again_and_recovers(fake_system):
    process = start_process("t_callback")
    old = fake_system.last("deploy")

    assert post(old["url"], {"ok": False, "error": "bad VLAN"})[0] == 200

    process.refresh_from_db()
    assert process.status == "failed"
    assert "the device refused the configuration: bad VLAN" in process.failed_reason
    assert log(process)[-1] == ("Deploy config", "failed")

    retried = retry_process(process.process_id, by="bob")

    assert retried.status == "awaiting_callback"
    new = fake_system.last("deploy")
    assert new["token"] != old["token"]
    assert len(effects(f"deploy-{process.process_id}")) == 2  # asked again
    assert post(old["url"], GOOD)[0] == 409  # the old token is dead
    assert post(new["url"], GOOD)[0] == 200
    process.refresh_from_db()
    assert process.status == "completed"


def test_a_deadline_that_passes_fails_the_step_and_a_retry_sends_a_new_token(fake_system):
    process = start_process("t_callback")
    old = fake_system.last("deploy")
    deadline = CallbackToken.objects.get(process=process).deadline

    assert tick(now=deadline - timedelta(seconds=1)).expired == []
    process.refresh_from_db()
    assert process.status == "awaiting_callback"

    report = tick(now=deadline + timedelta(seconds=1))

    assert report.expired == [process.process_id]
    process.refresh_from_db()
    assert process.status == "failed"
    assert process.failed_reason.startswith("no callback within 10 min")
    assert log(process)[-1] == ("Deploy config", "failed")
    assert post(old["url"], GOOD)[0] == 409
    assert tick(now=deadline + timedelta(seconds=2)).expired == []  # failed once, not again

    retry_process(process.process_id)

    new = fake_system.last("deploy")
    assert new["token"] != old["token"]
    code, body = post(old["url"], GOOD)
    assert code == 409 and "no longer works" in body["detail"]
    assert post(new["url"], GOOD)[0] == 200
    process.refresh_from_db()
    assert process.status == "completed"


def test_an_answer_after_the_deadline_is_refused_and_fails_the_step_at_once(fake_system, settings):
    process = start_process("t_callback")
    url = fake_system.last("deploy")["url"]
    CallbackToken.objects.filter(process=process).update(deadline=timezone.now() - timedelta(seconds=1))

    code, body = post(url, GOOD)

    assert code == 409
    assert "came too late: no callback within" in body["detail"]
    process.refresh_from_db()
    assert process.status == "failed"


def test_abort_while_awaiting_ends_the_process_and_kills_its_token(fake_system):
    process = start_process("t_callback")
    url = fake_system.last("deploy")["url"]

    aborted = abort_process(process.process_id, by="carol", reason="customer cancelled")

    assert aborted.status == "aborted"
    code, body = post(url, GOOD)
    assert code == 409 and "aborted by carol" in body["detail"]
    assert log(aborted)[-1] == ("Abort", "abort")


def test_staff_deliver_an_answer_by_hand_with_a_reason_which_the_log_keeps(fake_system):
    process = start_process("t_callback")

    with pytest.raises(Exception, match="without a reason"):
        deliver(process.process_id, None, GOOD, by="dave", reason="  ")
    deliver(process.process_id, None, GOOD, by="dave", reason="the NOC confirmed it by phone")

    process.refresh_from_db()
    assert process.status == "completed"
    row = ProcessStep.objects.get(process=process, status="callback")
    assert row.created_by == "dave"
    assert row.error == "delivered by hand by dave: the NOC confirmed it by phone"
    assert post(fake_system.last("deploy")["url"], GOOD)[0] == 409  # the system's own answer comes too late


@pytest.mark.requires_postgres
def test_two_deliveries_at_the_same_moment_exactly_one_wins(fake_system):
    rounds = 50
    for _ in range(rounds):
        process = start_process("t_callback")
        url = fake_system.last("deploy")["url"]
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def send(url: str = url, barrier: threading.Barrier = barrier, codes: list[int] = codes) -> None:
            from django.db import connection

            try:
                barrier.wait()
                codes.append(post(url, GOOD)[0])
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert sorted(codes) == [200, 409], codes
        process.refresh_from_db()
        assert process.status == "completed"
        assert [s for n, s in log(process) if n == "Deploy config"] == ["awaiting_callback", "callback", "success"]
        assert effects(f"c-{process.process_id}") == [f"c-{process.process_id}"]  # the step after ran once


@pytest.mark.requires_postgres
def test_an_answer_while_a_step_holds_the_process_is_503_with_retry_after_and_works_when_tried_again(
        fake_system, settings):
    settings.ORCHESTRATOR = {"LOCK_WAIT_SECONDS": 0.2}
    process = start_process("t_callback")
    url = fake_system.last("deploy")["url"]
    holding, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        from django.db import connection, transaction

        try:
            with transaction.atomic():
                Process.objects.select_for_update().get(pk=process.process_id)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert holding.wait(10)
        response = APIClient().post(FakeSystem.path(url), GOOD, format="json")
    finally:
        release.set()
        holder.join(30)

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    assert post(url, GOOD)[0] == 200



def test_show_process_says_what_an_awaiting_process_waits_for_with_its_progress(fake_system):
    from io import StringIO

    from django.core.management import call_command

    process = start_process("t_callback")
    APIClient().post(FakeSystem.path(fake_system.last("deploy")["progress_url"]), {"message": "pushing"},
                     format="json")
    out = StringIO()

    call_command("show_process", str(process.process_id), stdout=out)

    shown = out.getvalue()
    assert "awaiting the callback of 'Deploy config' since " in shown
    assert ", deadline " in shown
    assert ": pushing" in shown


def test_a_conditional_callback_step_checks_its_answer_even_when_the_answer_makes_its_condition_false(fake_system):
    process = start_process("t_conditional_callback")
    assert process.status == "awaiting_callback"

    assert post(fake_system.last("deploy")["url"], {"ok": False, "error": "bad VLAN"})[0] == 200

    process.refresh_from_db()
    assert process.status == "failed"  # validated, and refused: not skipped past
    assert "bad VLAN" in process.failed_reason


@pytest.mark.requires_postgres
def test_an_abort_asked_for_while_the_callback_action_runs_aborts_the_process_instead_of_awaiting(
        fake_system, tmp_path, monkeypatch, settings):
    """The abort's answer said "at the step's end": a step that then goes to wait must not swallow it."""
    import time

    from processes.engine import run_process

    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    monkeypatch.setenv("ENGINE_TEST_DIR", str(tmp_path))
    pid = str(start_process("t_callback", by="alice").process_id)
    hang, inside = tmp_path / f"deploy-{pid}.hang", tmp_path / f"deploy-{pid}.inside"
    hang.touch()

    def run() -> None:
        from django.db import connection

        try:
            run_process(pid)
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not inside.exists():
            assert time.monotonic() < deadline, "the action never started"
            time.sleep(0.02)
        assert abort_process(pid, by="ops", reason="not today").abort_pending
    finally:
        hang.unlink()
        runner.join(30)

    process = Process.objects.get(pk=pid)
    assert process.status == "aborted"
    assert process.failed_reason == "aborted by ops: not today"
    assert not CallbackToken.objects.filter(process=process, closed_at__isnull=True).exists()
    assert not ProcessLease.objects.filter(process=process).exists()
