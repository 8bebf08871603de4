"""Lines logged while a process runs carry its id, and while a step runs, its workflow and step, in every executor."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from orchestrator_site import logcontext
from orchestrator_site.celery import app as celery_app
from orchestrator_site.logcontext import ContextFilter
from orchestrator_site.logformat import JsonFormatter, PlainFormatter
from processes.executors import threadpool
from processes.models import Process, ProcessStatus
from processes.services import start_process
from processes.tasks import run_process_task
from tests.processes import flows

HELLO, DECIDE = "step one of", "step two of"


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.05)


def step_fields(line: dict) -> tuple:
    return line.get("process_id"), line.get("workflow"), line.get("step")


# The engine commits each step: a committed test database, as for every engine test.
@pytest.mark.django_db(transaction=True)
def test_a_steps_own_lines_carry_the_process_workflow_and_step_when_run_inline(json_log):
    process = start_process("t_logs", by="alice")

    process.refresh_from_db()
    assert process.status == ProcessStatus.COMPLETED
    pid = str(process.process_id)
    [hello] = json_log.about(f"{HELLO} {pid}")
    [decide] = json_log.about(f"{DECIDE} {pid}")
    assert step_fields(hello) == (pid, "t_logs", "Log a line")
    assert step_fields(decide) == (pid, "t_logs", "Log then maybe fail")  # not the step before it
    assert hello["logger"] == "tests.workflow_steps" and hello["thread"] == threading.current_thread().name
    # Over with the run: nothing is left in this thread's context for the lines after it.
    assert logcontext.current() == {}
    logging.getLogger("processes.engine").info("after the run")
    assert step_fields(json_log.about("after the run")[0]) == (None, None, None)


@pytest.mark.django_db(transaction=True)
def test_after_a_step_raised_its_failure_is_logged_with_it_and_later_lines_carry_no_step(json_log):
    flows.CONTROL["log_fail_times"] = 1
    process = start_process("t_logs", by="alice")

    process.refresh_from_db()
    assert process.status == ProcessStatus.FAILED
    pid = str(process.process_id)
    [decide] = json_log.about(f"{DECIDE} {pid}")
    assert step_fields(decide) == (pid, "t_logs", "Log then maybe fail")
    # The engine's line about the failure names the step too.
    [failed] = json_log.about(f"process {pid}: step failed: the step gave up")
    assert failed["logger"] == "processes.records"
    assert step_fields(failed) == (pid, "t_logs", "Log then maybe fail")
    assert logcontext.current() == {}
    logging.getLogger("tests.workflow_steps").info("after the failed run")
    assert step_fields(json_log.about("after the failed run")[0]) == (None, None, None)


@pytest.mark.django_db(transaction=True)
def test_a_run_as_the_celery_task_carries_the_process_and_step_and_leaves_the_callers_context_as_it_was(
    json_log, settings
):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}  # run below, not at the start
    process = start_process("t_logs", by="alice")
    pid = str(process.process_id)
    token = logcontext.bind_request_id("outer-request")
    try:
        run_process_task(pid)  # what a Celery worker calls (here, in this thread)
        assert logcontext.current() == {"request_id": "outer-request"}
    finally:
        logcontext.reset_request_id(token)
    assert Process.objects.get(pk=pid).status == ProcessStatus.COMPLETED
    [hello] = json_log.about(f"{HELLO} {pid}")
    assert step_fields(hello) == (pid, "t_logs", "Log a line")
    assert hello["request_id"] == "outer-request"


# The SQLite test database cannot take a second thread's writes (test_executors.py says why).
@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_on_the_thread_pool_step_lines_carry_the_process_and_step_and_the_id_of_the_request_that_started_it(
    staff_api, settings, json_log
):
    settings.ORCHESTRATOR = {"EXECUTOR": "threadpool", "THREADPOOL_WORKERS": 1}
    try:
        response = staff_api.post("/api/processes/", {"workflow": "t_logs"}, format="json",
                                  headers={"X-Request-ID": "start-from-api-1"})
        assert response.status_code == 201, response.content
        from_request = response.json()["id"]
        # Then one started outside any request, on the same (only) pool thread: no id left over from the first.
        from_elsewhere = str(start_process("t_logs", by="alice").process_id)
        ids = [from_request, from_elsewhere]
        wait_until(lambda: Process.objects.filter(pk__in=ids, status=ProcessStatus.COMPLETED).count() == 2, 20,
                   "the thread pool to complete both processes")
    finally:
        threadpool.shutdown(wait=True)

    for pid, request_id in [(from_request, "start-from-api-1"), (from_elsewhere, None)]:
        for text, step in [(HELLO, "Log a line"), (DECIDE, "Log then maybe fail")]:
            [line] = json_log.about(f"{text} {pid}")
            assert step_fields(line) == (pid, "t_logs", step)
            assert line.get("request_id") == request_id
            assert line["thread"].startswith("orchestrator-process")


def test_celery_workers_log_through_the_settings_logging_not_celerys_own():
    from celery import signals

    from orchestrator_site.celery import use_django_logging

    root = logging.getLogger()
    level = root.level
    try:
        # What a worker does at start: a receiver answering means Celery leaves the root logger alone.
        answers = signals.setup_logging.send(sender=None, loglevel=logging.WARNING, logfile=None, format="",
                                             colorize=False)
        assert [receiver for receiver, _ in answers] == [use_django_logging]
        assert root.level == logging.WARNING  # the worker's --loglevel
        [console] = [h for h in root.handlers if any(isinstance(f, ContextFilter) for f in h.filters)]
        assert isinstance(console.formatter, PlainFormatter | JsonFormatter)
        assert celery_app.main == "orchestrator_site"
    finally:
        root.setLevel(level)
