"""Notify on failure, every way a process fails: each queues exactly one notification (per channel) and sends it
once; a retrystep still waiting for its next try is not a failure. Also: the clean-up, the settings' check and
the admin page of the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from processes import notify_send, records
from processes.callbacks import CallbackClosed, deliver
from processes.models import CallbackToken, Notification, Process
from processes.notifications import check_settings
from processes.recovery import recover_stalled_processes, retry_due_processes
from processes.services import start_process
from tests.factories import ProcessFactory
from tests.processes import flows
from tests.processes.receiver import Receiver, closed_port_url

# PostgreSQL: the sender thread writes while the test reads, which the in-memory SQLite test database (shared
# cache: "database table is locked" at once, no busy wait) does not allow; a SQLite file (make run) does.
pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def senders_done():
    yield
    assert notify_send.wait_until_idle(15), "the after-commit sender thread did not finish"


def notify(settings, url: str, **more: object) -> None:
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTIFY_WEBHOOK_URL": url, **more}


# --- each way to fail: returns the failed process's id --------------------------------------------
def a_step_fails(settings):
    flows.CONTROL["fail_times"] = 1
    return start_process("t_writes").process_id


def a_retrystep_runs_out_of_tries(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "RETRYSTEP_MAX_TRIES": 3, "RETRYSTEP_BACKOFF_SECONDS": 0.0}
    flows.CONTROL["retry_fail_times"] = 10
    pid = start_process("t_retry").process_id
    for _ in range(2):
        assert Process.objects.get(pk=pid).status == "waiting"
        assert notify_send.wait_until_idle(15)
        assert Notification.objects.filter(process_id=pid).count() == 0  # waiting for its next try: no failure yet
        assert retry_due_processes() == [pid]
    return pid


def a_retrystep_cannot_be_retried_automatically(settings):
    flows.CONTROL["retry_fail_times"] = 1
    pid = start_process("t_retry").process_id
    Process.objects.filter(pk=pid).update(workflow_version=["Start", "Something else", "Done"],
                                          next_retry_at=timezone.now())
    retry_due_processes(now=timezone.now() + timedelta(seconds=1))
    return pid


def the_engine_gives_up(settings):
    pid = ProcessFactory(status="running").process_id
    assert records.fail_running(pid, "a run that kept dying", error_type="RunStopped")
    return pid


def the_database_stays_away(settings):
    pid = ProcessFactory(status="running").process_id
    lost = records.ConnectionLost("Write A", RuntimeError("server closed the connection unexpectedly"))
    assert records.give_up_on_database(pid, lost, 8)
    return pid


def no_worker_takes_it(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "EXECUTOR": "tests.processes.test_recovery.CountingExecutor",
                             "RESEND_AFTER_SECONDS": 60.0, "RESEND_BACKOFF_MAX_SECONDS": 60.0, "RESEND_MAX_TIMES": 1}
    pid = start_process("t_writes").process_id
    now = timezone.now()
    recover_stalled_processes(now=now + timedelta(minutes=2))
    recover_stalled_processes(now=now + timedelta(minutes=4))
    return pid


def a_callback_answer_comes_too_late(settings):
    from tests.processes.wait_flows import FakeSystem

    FakeSystem.reset()
    pid = start_process("t_callback").process_id
    CallbackToken.objects.filter(process_id=pid).update(deadline=timezone.now() - timedelta(seconds=1))
    with pytest.raises(CallbackClosed):
        deliver(pid, FakeSystem.last("deploy")["token"], {"ok": True, "device": "rtr-1"})
    return pid


WAYS = [
    (a_step_fails, "process_failed", "Write B then maybe fail: the external system said no"),
    (a_retrystep_runs_out_of_tries, "process_failed", "(gave up after 3 tries)"),
    (a_retrystep_cannot_be_retried_automatically, "process_failed", "automatic retry not possible"),
    (the_engine_gives_up, "process_failed", "a run that kept dying"),
    (the_database_stays_away, "process_failed", "lost the database connection 8 times in a row"),
    (no_worker_takes_it, "process_failed", "no worker took it"),
    (a_callback_answer_comes_too_late, "callback_deadline_passed", "no callback within "),
]


@pytest.mark.parametrize(("way", "event", "reason"), WAYS, ids=[way.__name__ for way, *_ in WAYS])
def test_every_way_a_process_fails_sends_exactly_one_notification(settings, receiver, way, event, reason):
    notify(settings, receiver.url)

    pid = way(settings)
    assert notify_send.wait_until_idle(15)
    notify_send.send_due(now=timezone.now() + timedelta(days=1))

    process = Process.objects.get(pk=pid)
    assert process.status == "failed"
    assert len(receiver.requests) == 1
    body = receiver.requests[0]["body"]
    assert (body["event"], body["process_id"], body["status"]) == (event, str(pid), "failed")
    assert reason in body["failed_reason"]
    assert body["failed_reason"] == process.failed_reason
    assert Notification.objects.get().state == "sent"


# --- sending trouble ---------------------------------------------------------------------------------
def test_a_mail_server_that_cannot_be_reached_is_a_failed_try_kept_for_the_next_tick(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTIFY_EMAILS": ("ops@example.org",)}
    port = int(closed_port_url().rsplit(":", 1)[1].split("/")[0])
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                                    "OPTIONS": {"host": "127.0.0.1", "port": port}}}
    flows.CONTROL["fail_times"] = 1

    process = start_process("t_writes")
    assert notify_send.wait_until_idle(15)

    assert Process.objects.get(pk=process.pk).status == "failed"
    row = Notification.objects.get()
    assert (row.channel, row.state, row.tries) == ("email", "pending", 1)
    assert row.last_error.startswith("could not send the email to ops@example.org: ConnectionRefusedError")


def test_a_notification_whose_channel_was_switched_off_since_is_given_up_not_sent(settings, receiver):
    notify(settings, receiver.url)
    receiver.answers.append(500)
    flows.CONTROL["fail_times"] = 1
    start_process("t_writes")
    assert notify_send.wait_until_idle(15)
    notify(settings, "")

    assert notify_send.send_due(now=timezone.now() + timedelta(hours=1)) == []

    row = Notification.objects.get()
    assert (row.state, row.tries) == ("given up", 2)
    assert row.last_error == 'ORCHESTRATOR["NOTIFY_WEBHOOK_URL"] is no longer set'
    assert len(receiver.requests) == 1


# --- clean-up, settings, admin -----------------------------------------------------------------------
def test_the_clean_up_task_deletes_old_sent_and_given_up_notifications_and_keeps_the_rest(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTIFY_RETENTION_DAYS": 30, "CLEANUP_BATCH_SIZE": 2}
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    def row(created, **fields):
        return Notification.objects.create(event="process_failed", channel="webhook", payload={},
                                           created_at=created, **fields).pk

    doomed = [row(old, sent_at=old), row(old, sent_at=old), row(old, last_error="gave up", tries=8)]
    kept = [row(old, next_try_at=now, tries=3),  # still to send, whatever its age
            row(recent, sent_at=recent), row(recent)]

    process = start_process("task_clean_up_tasks")

    state = process.steps.order_by("-id").first().state_after()
    assert state["notifications_deleted"] == len(doomed) == 3
    assert sorted(Notification.objects.values_list("pk", flat=True)) == sorted(kept)


def test_the_settings_check_names_a_bad_webhook_url_and_a_bad_address(settings):
    settings.ORCHESTRATOR = {"NOTIFY_WEBHOOK_URL": "alerts.example.org/hook",
                             "NOTIFY_EMAILS": ("ops@example.org", "night shift")}

    errors = check_settings()

    assert [error.id for error in errors] == ["processes.E101", "processes.E102"]
    assert "'alerts.example.org/hook' is not an http:// or https:// URL" in errors[0].msg
    assert "'night shift' is not an email address" in errors[1].msg
    settings.ORCHESTRATOR = {"NOTIFY_WEBHOOK_URL": "https://alerts.example.org/hook",
                             "NOTIFY_EMAILS": "a@x.org, b@y.org"}  # a string: read as a comma-separated list
    assert check_settings() == []


def test_the_admin_lists_notifications_with_their_state_and_last_error(settings, staff_client):
    notify(settings, "http://127.0.0.1:9/nothing-listens")
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes")
    assert notify_send.wait_until_idle(15)
    Notification.objects.create(event="process_failed", channel="email", payload={"process_id": "gone"},
                                sent_at=timezone.now())

    page = staff_client.get("/admin/processes/notification/?state=pending")

    assert page.status_code == 200
    text = page.content.decode()
    assert str(process.process_id)[:8] in text
    assert f"/admin/processes/process/{process.process_id}/change/" in text
    assert "could not reach the webhook at http://127.0.0.1:9" in text
    assert "gone" not in text  # the sent one is filtered out
    row = Notification.objects.get(channel="webhook")
    detail = staff_client.get(f"/admin/processes/notification/{row.pk}/change/").content.decode()
    assert "&quot;event&quot;: &quot;process_failed&quot;" in detail
    assert staff_client.get("/admin/processes/notification/add/").status_code == 403
