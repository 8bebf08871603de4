"""A paused engine refuses to start, retry or resume processes; they work again once it runs."""

from __future__ import annotations

import pytest

from processes.errors import EnginePaused
from processes.models import EngineSettings, Process, ProcessStep
from processes.services import resume_process, retry_process, start_process
from tests.processes import flows

pytestmark = pytest.mark.django_db(transaction=True)


def pause(paused: bool = True) -> None:
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": paused})


def test_a_paused_engine_refuses_a_start_and_writes_nothing():
    pause()

    with pytest.raises(EnginePaused) as refused:
        start_process("t_writes")

    assert refused.value.status_code == 503
    assert "cannot start t_writes: the engine is paused" in str(refused.value)
    assert Process.objects.count() == 0 and ProcessStep.objects.count() == 0


def test_a_paused_engine_refuses_retry_and_resume_and_they_work_once_it_runs_again():
    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes")
    suspended = start_process("t_input")
    pause()

    with pytest.raises(EnginePaused):
        retry_process(failed.process_id)
    with pytest.raises(EnginePaused):
        resume_process(suspended.process_id, {"colour": "red"})
    assert Process.objects.get(pk=failed.pk).status == "failed"
    assert Process.objects.get(pk=suspended.pk).status == "suspended"

    pause(False)

    assert retry_process(failed.process_id).status == "completed"
    assert resume_process(suspended.process_id, {"colour": "red"}).status == "completed"


def test_the_completed_process_row_says_where_it_ended():
    process = start_process("t_writes", by="erin")

    assert (process.status, process.last_step, process.current_step) == ("completed", "Done", 5)
    assert process.failed_reason == "" and process.acting_user == "erin"
    assert process.last_modified_at >= process.started_at
