"""Counts per status (API, admin): exact after every kind of change, also concurrent ones, without a full scan."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from processes.models import Process, ProcessStatus, ProcessStatusCount
from processes.scheduler import tick
from processes.services import abort_process, delete_task, resume_process, retry_process, start_process
from processes.status_counts import FOLD_AFTER_ROWS, fold, status_counts
from tests.factories import ProcessFactory, UserFactory, WorkflowFactory
from tests.processes import flows

runs = pytest.mark.django_db(transaction=True)


def truth() -> dict[str, int]:
    """What a GROUP BY over the processes says: the counts must always be this."""
    counts = dict.fromkeys(ProcessStatus.values, 0)
    counts.update(Counter(Process.objects.values_list("status", flat=True)))
    return counts


def api_counts() -> dict[str, int]:
    client = APIClient()
    client.force_authenticate(UserFactory())
    response = client.get("/api/processes/status-counts/")
    assert response.status_code == 200
    return response.json()["counts"]


@runs
def test_counts_stay_exact_through_starts_failures_retries_resumes_aborts_and_deletes():
    completed = start_process("t_writes", by="alice")
    flows.CONTROL["fail_times"] = 2
    failed = start_process("t_writes", by="alice")
    failed_again = start_process("t_writes", by="bob")
    suspended = start_process("t_input", by="bob")
    task = start_process("task_check_products", by="carol")
    assert (completed.status, failed.status, suspended.status, task.status) == (
        "completed", "failed", "suspended", "completed")
    assert status_counts() == truth() and truth()["failed"] == 2 and truth()["completed"] == 2

    retry_process(failed.process_id, by="alice")  # failed -> resumed -> running -> completed
    abort_process(failed_again.process_id, by="bob", reason="customer cancelled")
    assert status_counts() == truth()
    assert (truth()["completed"], truth()["failed"], truth()["aborted"]) == (3, 0, 1)

    resume_process(suspended.process_id, {"colour": "green"}, by="bob")
    delete_task(task.process_id, by="carol")
    assert status_counts() == truth() == api_counts()
    assert (truth()["completed"], truth()["suspended"]) == (3, 0)


@pytest.mark.django_db
def test_counts_follow_writes_the_code_does_not_make_raw_sql_and_bulk_deletes():
    workflow = WorkflowFactory(name="t_counts")
    made = [ProcessFactory(workflow=workflow, status=status) for status in ("running", "running", "failed")]
    with connection.cursor() as cursor:  # as the engine does: plain SQL on the process row
        cursor.execute(f"UPDATE {Process._meta.db_table} SET status = 'completed' WHERE process_id = %s",
                       [Process._meta.pk.get_db_prep_value(made[0].pk, connection)])
    Process.objects.filter(pk=made[1].pk).update(status=ProcessStatus.WAITING)
    assert status_counts() == truth()
    assert (truth()["running"], truth()["completed"], truth()["waiting"]) == (0, 1, 1)

    Process.objects.filter(workflow=workflow).delete()  # one statement, as the clean-up's batches are

    assert status_counts() == truth() == dict.fromkeys(ProcessStatus.values, 0)


@pytest.mark.django_db
def test_the_counts_do_not_read_the_processes():
    ProcessFactory.create_batch(3, status=ProcessStatus.FAILED)
    with CaptureQueriesContext(connection) as queries:
        counts = status_counts()
    assert counts["failed"] == 3
    if connection.vendor == "postgresql":
        table = re.compile(rf"\b{Process._meta.db_table}\b")
        assert not any(table.search(query["sql"]) for query in queries), queries.captured_queries


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_many_changes_are_folded_into_one_row_per_status_keeping_the_counts():
    workflow = WorkflowFactory(name="t_fold")
    made = ProcessFactory.create_batch(20, workflow=workflow, status=ProcessStatus.RUNNING)
    for _ in range(FOLD_AFTER_ROWS // 40 + 1):  # each round: 20 processes change status twice
        Process.objects.filter(workflow=workflow).update(status=ProcessStatus.FAILED)
        for process in made:  # one statement each, as the engine writes them
            Process.objects.filter(pk=process.pk).update(status=ProcessStatus.RUNNING)
    assert ProcessStatusCount.objects.count() > FOLD_AFTER_ROWS

    assert status_counts() == truth() and truth()["running"] == 20

    assert ProcessStatusCount.objects.count() <= len(ProcessStatus.values)
    assert status_counts() == truth()
    ProcessFactory(workflow=workflow, status=ProcessStatus.WAITING)
    assert fold() and status_counts() == truth()


@pytest.mark.requires_postgres
@runs
def test_counts_stay_exact_with_starts_retries_aborts_folds_and_deletes_at_once(settings):
    # Many writers at once, each in its own transaction on its own connection, and folds in between: every
    # status change lands exactly once, whichever commits first.
    settings.ORCHESTRATOR = {"SCHEDULE": {}}
    flows.CONTROL["fail_times"] = 6
    first = [start_process("t_writes", by="setup") for _ in range(6)]
    tasks = [start_process("task_check_products", by="setup") for _ in range(4)]
    failed = [p for p in first if p.status == ProcessStatus.FAILED]
    assert failed

    def each(calls: list[Any]) -> None:
        barrier = threading.Barrier(len(calls))

        def run(call: Any) -> None:
            try:
                barrier.wait(timeout=10)
                for _ in range(3):
                    call()
            except Exception as exc:  # a refused action is fine here; only the counts matter
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(call,)) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    errors: list[Exception] = []
    each([
        lambda: start_process("t_writes", by="a"),
        lambda: start_process("t_input", by="b"),
        lambda: start_process("task_check_products", by="c"),
        lambda: [retry_process(p.process_id, by="d") for p in failed if
                 Process.objects.get(pk=p.pk).status == ProcessStatus.FAILED],
        lambda: [abort_process(p.process_id, by="e") for p in Process.objects.filter(
                 status=ProcessStatus.SUSPENDED)[:2]],
        lambda: [delete_task(p.process_id, by="f") for p in tasks if Process.objects.filter(pk=p.pk).exists()],
        lambda: (fold(), tick()),
    ])

    assert status_counts() == truth() == api_counts()
    assert sum(truth().values()) == Process.objects.count() > 10
