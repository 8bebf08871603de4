"""Notify on failure: a webhook and/or an email when a process fails or a callback deadline passes, sent after
the failure commits (never for one that rolled back), retried with backoff, sent once however many schedulers
tick, and never touching the process."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from processes import notify_send
from processes.models import CallbackToken, Notification, Process, ProcessStep
from processes.records import fail_running
from processes.scheduler import tick
from processes.services import start_process
from tests.factories import ProcessFactory
from tests.processes import flows
from tests.processes.conftest import log
from tests.processes.receiver import Receiver, closed_port_url

# PostgreSQL: the sender thread writes while the test reads, which the in-memory SQLite test database (shared
# cache: "database table is locked" at once, no busy wait) does not allow; a SQLite file (make run) does.
pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

BASE = "https://orch.example.org"
FAILED_STEP = "Write B then maybe fail"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def senders_done():
    """No sender thread of one test may outlive it (it would write into the next test's tables)."""
    yield
    assert notify_send.wait_until_idle(15), "the after-commit sender thread did not finish"


def notify(settings, url: str = "", emails: tuple[str, ...] = (), **more: object) -> None:
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTIFY_WEBHOOK_URL": url, "NOTIFY_EMAILS": emails,
                             "CALLBACK_BASE_URL": BASE + "/", **more}


def settled() -> None:
    assert notify_send.wait_until_idle(15)


def failing_process() -> Process:
    flows.CONTROL["fail_times"] = 1
    process = Process.objects.get(pk=start_process("t_writes", by="alice").pk)
    assert process.status == "failed"
    return process


def test_a_failed_process_posts_one_webhook_with_the_documented_body(settings, receiver):
    notify(settings, receiver.url)
    before = timezone.now()

    process = failing_process()
    settled()

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/orchestrator?key=s3cret"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Orchestrator-Event"] == "process_failed"
    body = dict(request["body"])
    occurred_at = datetime.fromisoformat(body.pop("occurred_at"))
    pid = str(process.process_id)
    assert body == {
        "event": "process_failed",
        "process_id": pid,
        "workflow": "t_writes",
        "status": "failed",
        "failed_reason": f"{FAILED_STEP}: the external system said no",
        "step": FAILED_STEP,
        "attempt": 1,
        "admin_url": f"{BASE}/admin/processes/process/{pid}/change/",
        "api_url": f"{BASE}/api/processes/{pid}/",
    }
    assert before <= occurred_at <= timezone.now()
    row = Notification.objects.get()
    assert (row.state, row.tries, row.channel, row.event, row.process_id) == (
        "sent", 1, "webhook", "process_failed", process.process_id)
    assert tick(now=timezone.now() + timedelta(days=1)).notified == []
    assert len(receiver.requests) == 1  # sent once, never again


def test_a_callback_deadline_that_passes_posts_callback_deadline_passed(settings, receiver, fake_system):
    notify(settings, receiver.url)
    process = start_process("t_callback")
    deadline = CallbackToken.objects.get(process=process).deadline
    tick(now=deadline - timedelta(seconds=1))
    settled()
    assert receiver.requests == []  # still awaiting: nothing to say

    tick(now=deadline + timedelta(seconds=1))
    settled()
    tick(now=deadline + timedelta(minutes=5))
    settled()

    assert len(receiver.requests) == 1
    body = receiver.requests[0]["body"]
    assert body["event"] == "callback_deadline_passed"
    assert body["process_id"] == str(process.process_id)
    assert body["workflow"] == "t_callback"
    assert body["status"] == "failed"
    assert body["step"] == "Deploy config"
    assert body["failed_reason"].startswith("no callback within 10 min (deadline ")
    assert receiver.requests[0]["headers"]["X-Orchestrator-Event"] == "callback_deadline_passed"


def test_a_receiver_that_answers_500_gets_it_on_the_next_tick_and_the_process_is_untouched(settings, receiver):
    notify(settings, receiver.url, NOTIFY_BACKOFF_SECONDS=30.0)
    receiver.answers.extend([500, 200])

    process = failing_process()
    settled()
    seen = (process.status, process.failed_reason, process.last_modified_at, log(process))

    row = Notification.objects.get()
    assert (row.state, row.tries) == ("pending", 1)
    assert row.last_error.startswith("the webhook at http://127.0.0.1:")
    assert "answered 500" in row.last_error and "receiver trouble" in row.last_error
    assert "s3cret" not in row.last_error  # the URL's path and query may hold a secret: never logged
    assert timedelta(seconds=25) < row.next_try_at - timezone.now() <= timedelta(seconds=30)
    assert tick().notified == []  # not due yet: backoff
    assert len(receiver.requests) == 1

    report = tick(now=timezone.now() + timedelta(seconds=31))

    assert report.notified == [row.pk]
    assert [r["status"] for r in receiver.requests] == [500, 200]
    assert receiver.requests[1]["body"] == receiver.requests[0]["body"]
    row.refresh_from_db()
    assert (row.state, row.tries) == ("sent", 2)
    process = Process.objects.get(pk=process.pk)
    assert (process.status, process.failed_reason, process.last_modified_at, log(process)) == seen


@pytest.mark.parametrize("status", [302, 404, 503])
def test_any_answer_but_2xx_is_a_failed_try_and_a_redirect_is_not_followed(settings, receiver, status):
    notify(settings, receiver.url)
    receiver.answers.append(status)

    failing_process()
    settled()

    assert [r["status"] for r in receiver.requests] == [status]  # not followed to /elsewhere
    row = Notification.objects.get()
    assert row.state == "pending"
    assert f"answered {status}" in row.last_error


def test_a_receiver_that_stays_down_is_tried_with_doubling_waits_then_given_up_with_an_error(settings, caplog):
    notify(settings, closed_port_url(), NOTIFY_MAX_TRIES=3, NOTIFY_BACKOFF_SECONDS=10.0,
           NOTIFY_BACKOFF_MAX_SECONDS=15.0)

    process = failing_process()
    settled()
    row = Notification.objects.get()
    assert row.tries == 1
    assert "could not reach the webhook at http://127.0.0.1:" in row.last_error
    assert "refused" in row.last_error.lower()
    first = row.next_try_at

    now = first + timedelta(seconds=1)
    tick(now=now)
    row.refresh_from_db()
    assert (row.tries, row.next_try_at) == (2, now + timedelta(seconds=15))  # 20 s, capped at 15
    with caplog.at_level("ERROR", logger="processes.notify_send"):
        tick(now=row.next_try_at)

    row.refresh_from_db()
    assert (row.state, row.tries, row.next_try_at) == ("given up", 3, None)
    assert any("gave up on its process_failed notification by webhook after 3 tries" in r.getMessage()
               and str(process.process_id) in r.getMessage() for r in caplog.records)
    assert tick(now=now + timedelta(days=1)).notified == []  # given up: not tried again
    assert Notification.objects.get().tries == 3
    assert Process.objects.get(pk=process.pk).status == "failed"


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_try(settings, receiver):
    notify(settings, receiver.url, NOTIFY_TIMEOUT_SECONDS=0.3)
    receiver.delay = 1.0

    failing_process()
    settled()

    row = Notification.objects.get()
    assert row.state == "pending"
    assert "did not answer within 0.3s" in row.last_error


def test_nothing_is_written_or_sent_when_notifications_are_off(receiver):
    # The receiver listens, but no setting names it: the defaults send nothing.
    process = failing_process()
    settled()
    tick(now=timezone.now() + timedelta(hours=1))

    assert Process.objects.get(pk=process.pk).status == "failed"
    assert Notification.objects.count() == 0
    assert receiver.requests == []
    assert mail.outbox == []


def test_a_failure_that_rolls_back_sends_nothing(settings, receiver):
    notify(settings, receiver.url, emails=("ops@example.org",))
    process = ProcessFactory(status="running")

    with pytest.raises(RuntimeError), transaction.atomic():
        assert fail_running(process.process_id, "the engine gave up")
        assert Notification.objects.count() == 2  # written with the failure, in its transaction...
        raise RuntimeError("...which rolls back")
    settled()
    # The notifications' part of the tick alone: the rest would recover this made-up running process.
    assert notify_send.send_due(now=timezone.now() + timedelta(hours=1)) == []

    assert Process.objects.get(pk=process.pk).status == "running"
    assert Notification.objects.count() == 0
    assert receiver.requests == []
    assert mail.outbox == []


def test_an_email_goes_to_every_address_with_a_short_subject_and_a_plain_text_body(settings):
    settings.DEFAULT_FROM_EMAIL = "orchestrator@example.org"
    notify(settings, emails=("ops@example.org", "night@example.org"))

    process = failing_process()
    settled()

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    short = str(process.process_id)[:8]
    assert message.subject == (f"[orchestrator] process {short} of t_writes failed: "
                               f"{FAILED_STEP}: the external system said no")
    assert message.to == ["ops@example.org", "night@example.org"]
    assert message.from_email == "orchestrator@example.org"
    assert f"Process {process.process_id} of workflow t_writes failed: a step failed." in message.body
    assert f"Reason:  {FAILED_STEP}: the external system said no" in message.body
    assert f"Step:    {FAILED_STEP} (attempt 1)" in message.body
    assert f"Admin:   {BASE}/admin/processes/process/{process.process_id}/change/" in message.body
    assert f"API:     {BASE}/api/processes/{process.process_id}/" in message.body
    assert Notification.objects.get().state == "sent"


def test_a_long_reason_is_cut_to_80_characters_on_one_line_in_the_subject(settings):
    notify(settings, emails=("ops@example.org",))
    process = ProcessFactory(status="running", workflow_version=["Start", "Provision"], current_step=1)
    reason = "the provisioning system said:\n" + "x" * 200

    fail_running(process.process_id, reason)
    settled()

    subject = mail.outbox[0].subject
    cut = subject.split(" failed: ", 1)[1]
    assert len(cut) == 80 and cut.endswith("…")
    assert cut.startswith("Provision: the provisioning system said: xxx")
    assert "\n" not in subject


def test_webhook_and_email_are_sent_apart_a_failing_one_does_not_send_the_other_twice(settings, receiver):
    notify(settings, receiver.url, emails=("ops@example.org",))
    receiver.answers.append(500)

    failing_process()
    settled()
    tick(now=timezone.now() + timedelta(hours=1))

    assert [r["status"] for r in receiver.requests] == [500, 200]
    assert len(mail.outbox) == 1  # sent at the first try, not again with the webhook's retry
    assert sorted((row.channel, row.state, row.tries) for row in Notification.objects.all()) == [
        ("email", "sent", 1), ("webhook", "sent", 2)]


def test_two_ticks_at_once_send_a_notification_once(settings, receiver):
    notify(settings, receiver.url)
    receiver.answers.append(500)  # the after-commit send fails: the ticks have it to send
    failing_process()
    settled()
    receiver.delay = 0.5  # both ticks are in their sending part while the first answer is awaited
    later = timezone.now() + timedelta(hours=1)
    start = threading.Barrier(2)
    reports = []

    def one_tick() -> None:
        try:
            start.wait()
            reports.append(tick(now=later))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert [r["status"] for r in receiver.requests] == [500, 200]
    assert sorted(len(report.notified) for report in reports) == [0, 1]
    assert Notification.objects.get().tries == 2


def test_an_abort_asked_for_while_the_step_ran_withdraws_the_notification_of_its_failure(
        settings, receiver, monkeypatch):
    from processes import records
    from processes.models import ProcessLease

    notify(settings, receiver.url)
    original = records._record_failure

    def request_then_record(process_id, *args, **kwargs):
        ProcessLease.objects.filter(process_id=process_id).update(
            abort_requested_at=timezone.now(), abort_requested_by="ops", abort_reason="stop it")
        return original(process_id, *args, **kwargs)

    monkeypatch.setattr(records, "_record_failure", request_then_record)
    flows.CONTROL["fail_times"] = 1
    process = Process.objects.get(pk=start_process("t_writes").pk)
    settled()
    tick(now=timezone.now() + timedelta(hours=1))

    assert process.status == "aborted"  # it ended aborted, as asked, not failed
    assert Notification.objects.count() == 0
    assert receiver.requests == []
    assert ProcessStep.objects.filter(process=process).order_by("-id").first().status == "abort"
