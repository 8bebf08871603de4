"""`manage.py bench_reads`: prints p50/p95 of each list, count and search page per N, and leaves no rows."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from processes.models import Process
from workflows.models import Workflow


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bench_reads_prints_each_page_for_each_count_and_removes_its_rows():
    out = StringIO()

    call_command("bench_reads", "--counts", "20,50", "--requests", "3", stdout=out)

    text = out.getvalue()
    assert "filled:    20 processes" in text and "filled:    50 processes" in text
    assert "uptime:" in text and "p95 ratio" in text
    for page in ("API list ?status=failed", "API status counts", "admin list", "admin search 'zqxj'"):
        line = next(line for line in text.splitlines() if line.strip().startswith(page))
        assert len(line.split()) > len(page.split()) + 4, line  # two p50 / p95 pairs and a ratio
    assert not Process.objects.exists() and not Workflow.objects.filter(name__startswith="bench_reads").exists()


def test_bench_reads_refuses_bad_counts():
    with pytest.raises(CommandError, match="--counts takes whole numbers"):
        call_command("bench_reads", "--counts", "ten")
