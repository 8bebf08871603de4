"""The process list ordered by last_modified_at: the same rows as a plain sort, served without an index on it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from processes.models import Process, ProcessStatus
from processes.recently_modified import narrow_to_top
from tests.factories import ProcessFactory, UserFactory, WorkflowFactory

URL = "/api/processes/"
P = ProcessStatus


def _engine_step(process: Process, when) -> None:
    """What the engine's step does to a process row (processes.steplog.advance): plain SQL, status unchanged."""
    prep = Process._meta.get_field("last_modified_at").get_db_prep_value
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Process._meta.db_table} SET current_step = current_step + 1, last_step = %s, "
            f"current_attempt = 1, last_modified_at = %s WHERE process_id = %s",
            ["Step", prep(when, connection), Process._meta.pk.get_db_prep_value(process.pk, connection)],
        )


@pytest.fixture
def processes(db) -> list[Process]:
    """Processes at rest and running, modified in every way the code modifies them, in an order unlike their start."""
    now = timezone.now()
    workflow = WorkflowFactory(name="t_recent")
    made = []
    for n, status in enumerate([P.COMPLETED, P.FAILED, P.RUNNING, P.SUSPENDED, P.COMPLETED, P.RUNNING, P.ABORTED,
                                P.WAITING, P.COMPLETED, P.RUNNING, P.FAILED, P.COMPLETED, P.COMPLETED]):
        started = now - timedelta(hours=n)
        made.append(ProcessFactory(workflow=workflow, status=status, started_at=started,
                                   last_modified_at=started + timedelta(minutes=5 * (n % 4))))
    # Running ones move on step by step (their last step is the newest of all for one of them)...
    for minutes, process in zip((1, -600, -120), [p for p in made if p.status == P.RUNNING], strict=True):
        for step in range(3):
            _engine_step(process, now + timedelta(minutes=minutes, seconds=step))
    # ...a failed one is retried and fails again (the ORM, a whole save() from a copy loaded before), a
    # suspended one is touched without a status change, and one goes from running to completed in plain SQL.
    failed = Process.objects.get(pk=made[1].pk)
    failed.resume()
    failed.run()
    failed.fail("again")
    failed.last_modified_at = now - timedelta(minutes=30)
    failed.save()
    Process.objects.filter(pk=made[3].pk).update(last_modified_at=now - timedelta(minutes=45))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Process._meta.db_table} SET status = 'completed', last_modified_at = %s "
                       f"WHERE process_id = %s", [Process._meta.get_field("last_modified_at").get_db_prep_value(
                           now - timedelta(minutes=50), connection),
                           Process._meta.pk.get_db_prep_value(made[9].pk, connection)])
    return made


def expected(descending: bool, status: str | None = None) -> list[str]:
    rows = Process.objects.filter(**({"status": status} if status else {})).values_list("last_modified_at", "pk")
    ordered = sorted(rows, key=lambda row: (row[0], str(row[1])), reverse=descending)
    if descending:  # ties: the id ascending, as the list breaks them
        ordered = sorted(ordered, key=lambda row: str(row[1]))
        ordered = sorted(ordered, key=lambda row: row[0], reverse=True)
    return [str(pk) for _, pk in ordered]


@pytest.mark.parametrize("ordering", ["-last_modified_at", "last_modified_at"])
@pytest.mark.parametrize("status", [None, "completed"])
def test_every_page_by_last_modified_at_is_the_plain_sorts(processes, ordering, status):
    api = APIClient()
    api.force_authenticate(UserFactory())
    seen: list[str] = []
    for offset in range(0, 14, 3):
        params = {"ordering": ordering, "limit": 3, "offset": offset, **({"status": status} if status else {})}
        body = api.get(URL, params).json()
        seen += [item["id"] for item in body["results"]]
    assert seen == expected(ordering.startswith("-"), status)


@pytest.mark.requires_postgres
def test_settled_at_is_last_modified_at_for_every_process_at_rest_whatever_wrote_it(processes):
    rows = Process.objects.values_list("status", "last_modified_at", "settled_at")
    at_rest = [(modified, settled) for status, modified, settled in rows if status != P.RUNNING]
    assert at_rest and all(modified == settled for modified, settled in at_rest)
    # The running ones moved on without it (their steps leave it alone): the narrowing finds them by status.
    assert all(settled != modified for status, modified, settled in rows if status == P.RUNNING)


@pytest.mark.requires_postgres
def test_a_page_by_last_modified_at_reads_a_page_of_rows_not_all_of_them(processes):
    ordered = Process.objects.order_by("-last_modified_at", "process_id")

    narrowed = narrow_to_top(ordered, 3)

    assert list(narrowed[:3]) == list(ordered[:3])
    # The two still running, and the three newest at rest: 5 rows to sort, not all 13.
    assert narrowed.count() == 5
    assert narrow_to_top(Process.objects.order_by("-started_at"), 3).count() == 13  # other orders: unchanged


@pytest.mark.requires_postgres
def test_a_step_of_a_running_process_is_a_hot_update(processes):
    # No index of the process table may hold a column each step writes (last_modified_at, current_step...):
    # then the step's update writes no index entry at all. (An index on last_modified_at would break this.)
    running = Process.objects.filter(status=P.RUNNING).first()

    def hot_updates() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_get_xact_tuples_hot_updated(%s::regclass)", [Process._meta.db_table])
            return int(cursor.fetchone()[0])

    before = hot_updates()
    for step in range(10):
        _engine_step(running, timezone.now() + timedelta(seconds=step))

    # All of them, but for one that finds its page full (the new row version then goes to another page).
    assert hot_updates() - before >= 9
