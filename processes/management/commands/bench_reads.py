"""`manage.py bench_reads [--counts 1000,100000] [--requests 20]`: list, count and search pages against N processes.

For each N it fills the process table with N processes of one benchmark workflow (in SQL, with
generate_series: statuses, creators, times and failure reasons spread as a busy installation has them),
runs VACUUM ANALYZE, then requests each page of the API and the admin through Django's whole request
stack and prints p50 and p95 in milliseconds, and the ratio of the largest N to the smallest. The rows
are removed at the end, whatever happens. PostgreSQL only (the question is how its plans scale).
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from processes.models import Process, ProcessStatus
from workflows.models import Workflow

logger = logging.getLogger(__name__)

MAX_COUNT = 5_000_000
# What a list page of the API and of the admin asks for; each is requested the same way at every N.
PAGES: list[tuple[str, str]] = [
    ("API list ?status=failed", "/api/processes/?status=failed"),
    ("API list ?ordering=-last_modified_at", "/api/processes/?ordering=-last_modified_at"),
    ("API list ?created_by=user-7", "/api/processes/?created_by=user-7"),
    ("API status counts", "/api/processes/status-counts/"),
    ("API search ?search=bench_reads", "/api/processes/?search=bench_reads"),
    ("admin list", "/admin/processes/process/"),
    ("admin list, status failed", "/admin/processes/process/?status__exact=failed"),
    ("admin search 'zqxj'", "/admin/processes/process/?q=zqxj"),
]
STATUSES = [ProcessStatus.COMPLETED] * 90 + [ProcessStatus.FAILED] * 5 + [ProcessStatus.ABORTED] * 3 + [
    ProcessStatus.SUSPENDED, ProcessStatus.WAITING]


def _counts(raw: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or not all(1 <= c <= MAX_COUNT for c in counts):
        raise CommandError(f"--counts takes whole numbers from 1 to {MAX_COUNT:,} separated by commas, not {raw!r}")
    return counts


class Command(BaseCommand):
    help = "Time the process list, count and search pages of the API and the admin against N processes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--counts", default="1000,100000", help="Numbers of processes, comma-separated.")
        parser.add_argument("--requests", type=int, default=20, help="Timed requests per page and N (after one "
                                                                     "untimed).")

    def handle(self, *args: object, **options: object) -> None:
        counts = _counts(str(options["counts"]))
        if connection.vendor != "postgresql":
            raise CommandError("bench_reads measures PostgreSQL's plans; set DATABASE_URL to a PostgreSQL database")
        requests = max(int(options["requests"]), 3)  # type: ignore[arg-type]
        out = self.stdout
        out.write(f"database:  {connection.vendor} {connection.settings_dict['NAME']}")
        results: dict[int, dict[str, tuple[float, float]]] = {}
        with _benchmark_rows() as workflow:
            client = _staff_client()
            for count in counts:
                started = time.monotonic()
                _fill(workflow, count)
                out.write(f"filled:    {count:,} processes in {time.monotonic() - started:.1f} s (VACUUM ANALYZE done)")
                out.write(f"uptime:    {_uptime()}")
                results[count] = {label: _time(client, url, requests) for label, url in PAGES}
        out.write(f"timing:    p50 / p95 of {requests} requests per page (after one untimed), in ms")
        header = "  " + f"{'page':<40}" + "".join(f"{f'N={c:,}':>22}" for c in counts)
        if len(counts) > 1:
            header += f"{'p95 ratio':>12}"
        out.write(header)
        for label, _ in PAGES:
            line = "  " + f"{label:<40}" + "".join(
                f"{results[c][label][0]:>10.1f} / {results[c][label][1]:>7.1f}  " for c in counts)
            if len(counts) > 1:
                line += f"{results[counts[-1]][label][1] / max(results[counts[0]][label][1], 0.001):>12.2f}"
            out.write(line)
        out.write("removed:   the benchmark's processes, workflow and user")


@contextmanager
def _benchmark_rows() -> Iterator[Workflow]:
    workflow = Workflow.objects.create(name=f"bench_reads_{uuid.uuid4().hex[:8]}", target="system",
                                       description="bench_reads", is_task=True)
    try:
        yield workflow
    finally:
        _empty(workflow)
        workflow.delete()
        get_user_model().objects.filter(username="bench-reads").delete()


def _empty(workflow: Workflow) -> None:
    # Only processes rows: the fill writes nothing that depends on them.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Process._meta.db_table} WHERE workflow_id = %s", [workflow.pk])


def _fill(workflow: Workflow, count: int) -> None:
    """Make the benchmark workflow have exactly `count` processes (in SQL: fast at a million)."""
    _empty(workflow)
    table = Process._meta.db_table
    statuses = "ARRAY[" + ",".join(f"'{s}'" for s in STATUSES) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (process_id, workflow_id, status, current_step, current_attempt, last_step,
                failed_reason, traceback, created_by, acting_user, started_at, last_modified_at, settled_at, is_task,
                note, workflow_version, next_retry_at)
            SELECT gen_random_uuid(), %s, s.status, 3, 1, 'Step 3',
                CASE WHEN s.status = 'failed' THEN 'the router refused the change (' || i || ')' ELSE '' END,
                '', 'user-' || (i %% 50), 'user-' || (i %% 50),
                now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval + interval '2 seconds',
                -- settled_at as the trigger of migration 0009 would set it (given, so the trigger is not called
                -- a million times)
                now() - (i || ' seconds')::interval + interval '2 seconds',
                true, '', '["Start", "Step 2", "Step 3", "Done"]'::jsonb, NULL
            FROM generate_series(1, %s) AS i,
                LATERAL (SELECT ({statuses})[1 + (i::bigint * 7919) %% {len(STATUSES)}] AS status) AS s
            """,
            [workflow.pk, count],
        )
        cursor.execute(f"VACUUM ANALYZE {table}")


def _staff_client() -> Client:
    user, _ = get_user_model().objects.get_or_create(username="bench-reads",
                                                     defaults={"is_staff": True, "is_superuser": True})
    client = Client(HTTP_HOST="127.0.0.1")  # a host every profile allows
    client.force_login(user)
    return client


def _time(client: Client, url: str, requests: int) -> tuple[float, float]:
    with override_settings(DEBUG=False):
        response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}: {response.content[:300]!r}")
        took = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(url)
            took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, round(0.95 * (len(took) - 1)))]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"
