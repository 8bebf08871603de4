"""`manage.py bench_http`: starts and polls over real HTTP, with and without kept connections; leaves nothing."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from processes.models import Process
from workflows.models import Workflow


@pytest.mark.requires_postgres  # the server's threads share the database: not SQLite's in-memory test one
@pytest.mark.django_db(transaction=True)
def test_bench_http_prints_p50_p95_and_connections_for_both_modes_and_removes_its_rows():
    out = StringIO()

    call_command("bench_http", "--requests", "3", "--steps", "2", stdout=out)

    text = out.getvalue()
    assert text.count("uptime:") == 2 and "executor threadpool" in text
    rows = {label: re.search(rf"{re.escape(label)}\s+([\d.]+) /\s+([\d.]+)\s+([\d.]+) connections", text)
            for label in ("CONN_MAX_AGE=0 (a connection per request)", "CONN_MAX_AGE=60 (connections kept)")}
    assert all(rows.values()), text
    # Each start opens connections for its requests (POST, GETs) without reuse; fewer with it.
    opened = {label: float(match.group(3)) for label, match in rows.items()}
    assert opened["CONN_MAX_AGE=0 (a connection per request)"] > opened["CONN_MAX_AGE=60 (connections kept)"]
    assert re.search(r"ratio:\s+p50 kept / per request [\d.]+, p95 [\d.]+", text)
    assert not Process.objects.exists()
    assert not Workflow.objects.filter(name__startswith="bench_noop_").exists()
    assert not get_user_model().objects.filter(username="bench-http").exists()


def test_bench_http_refuses_bad_numbers():
    with pytest.raises(CommandError, match="--requests: must be a whole number from 3"):
        call_command("bench_http", "--requests", "1")
