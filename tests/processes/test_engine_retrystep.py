"""Retry steps: failures wait and are retried automatically with backoff, up to a number of tries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from processes.models import Process, ProcessStep
from processes.recovery import retry_due_processes
from processes.services import start_process
from tests.processes import flows
from tests.processes.conftest import effects

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_retrystep_that_keeps_failing_ends_failed_after_the_configured_tries(fast_retries):
    flows.CONTROL["retry_fail_times"] = 10

    process = start_process("t_retry")
    assert process.status == "waiting"
    assert retry_due_processes() == [process.process_id]
    assert Process.objects.get(pk=process.pk).status == "waiting"
    assert retry_due_processes() == [process.process_id]

    process = Process.objects.get(pk=process.pk)
    assert process.status == "failed"
    assert "gave up after 3 tries" in process.failed_reason
    tries = list(ProcessStep.objects.filter(process=process, name="Call a flaky system")
                 .order_by("id").values_list("status", "attempt"))
    assert tries == [("waiting", 1), ("waiting", 2), ("failed", 3)]
    assert retry_due_processes() == []  # a failed process is not retried automatically
    assert effects(f"flaky-attempt-{process.process_id}") == []  # each failed try rolled back its write


def test_a_retrystep_that_recovers_completes(fast_retries):
    flows.CONTROL["retry_fail_times"] = 1

    process = start_process("t_retry")
    assert process.status == "waiting"
    retry_due_processes()

    process = Process.objects.get(pk=process.pk)
    assert process.status == "completed"
    assert process.next_retry_at is None


def test_the_backoff_doubles_and_is_not_retried_before_it_is_due(settings):
    settings.ORCHESTRATOR = {"RETRYSTEP_MAX_TRIES": 5, "RETRYSTEP_BACKOFF_SECONDS": 10.0}
    flows.CONTROL["retry_fail_times"] = 10

    before = timezone.now()
    process = start_process("t_retry")
    first_due = Process.objects.get(pk=process.pk).next_retry_at
    assert timedelta(seconds=9) < first_due - before < timedelta(seconds=11)
    assert retry_due_processes() == []  # not yet due

    retried_at = timezone.now()
    assert retry_due_processes(now=first_due) == [process.process_id]

    # The second try failed too: the wait doubles, counted from that failure.
    second_due = Process.objects.get(pk=process.pk).next_retry_at
    assert timedelta(seconds=19) < second_due - retried_at < timedelta(seconds=21)
