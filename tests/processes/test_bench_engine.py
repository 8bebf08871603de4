"""`manage.py bench_engine` runs processes through the engine, measures a baseline, and cleans up after itself."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from processes.models import EngineSettings, Process, ProcessStep
from workflows.models import Workflow
from workflows.registry import all_workflows


def _tables() -> set[str]:
    return set(connection.introspection.table_names())


@pytest.mark.django_db(transaction=True)
def test_bench_engine_reports_engine_baseline_and_ratio_and_leaves_nothing_behind():
    out = StringIO()

    call_command("bench_engine", processes=3, steps=2, verbose_queries=True, stdout=out, stderr=StringIO())

    output = out.getvalue()
    assert re.search(r"^engine: .* = [\d,]+ steps/s", output, re.MULTILINE), output
    assert re.search(r"^baseline: .* = [\d,]+ steps/s", output, re.MULTILINE), output
    assert re.search(r"^ratio: +\d+\.\d\d", output, re.MULTILINE), output
    assert re.search(r"^queries/step: +\d", output, re.MULTILINE), output
    assert "processes_processstep" in output  # --verbose-queries lists the step's SQL
    # Nothing left: no processes, no step rows, no workflow, no scratch tables.
    assert not Process.objects.exists()
    assert not ProcessStep.objects.exists()
    assert not Workflow.objects.filter(name__startswith="bench_noop_").exists()
    assert not [name for name in all_workflows() if name.startswith("bench_noop_")]
    assert not {"bench_baseline_process", "bench_baseline_step"} & _tables()


@pytest.mark.django_db(transaction=True)
def test_bench_engine_keep_leaves_the_processes():
    call_command("bench_engine", processes=2, steps=1, keep=True, stdout=StringIO(), stderr=StringIO())

    # Two measured, plus the warm-up and the one whose queries were counted.
    assert Process.objects.filter(workflow__name="bench_noop_1", status="completed").count() == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("option", "value", "most"), [
    ("processes", 0, 1_000_000), ("steps", 0, 1_000), ("processes", -5, 1_000_000),
    ("processes", 10**20, 1_000_000), ("steps", 5_000, 1_000),
])
def test_bench_engine_refuses_a_count_out_of_its_range(option, value, most):
    with pytest.raises(CommandError, match=f"--{option} must be a whole number from 1 to {most}, not {value}"):
        call_command("bench_engine", **{option: value}, stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_bench_engine_refuses_while_the_engine_is_paused():
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})

    with pytest.raises(CommandError, match="engine is paused"):
        call_command("bench_engine", processes=1, steps=1, stdout=StringIO())
    assert not Process.objects.exists()


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bench_engine_threadpool_reports_a_line_per_worker_count_and_leaves_nothing_behind():
    out = StringIO()

    call_command("bench_engine", processes=3, steps=2, executor="threadpool", workers="1,2", timeout=60,
                 stdout=out, stderr=StringIO())

    output = out.getvalue()
    assert re.search(r"^baseline: .* = [\d,]+ steps/s", output, re.MULTILINE), output
    for count in (1, 2):
        # 3 processes x (Start + 2 steps + Done)
        assert re.search(rf"^workers={count}: 12 steps in \d+\.\d+ s = [\d,]+ steps/s$", output, re.MULTILINE), output
    assert not Process.objects.exists()
    assert not Workflow.objects.filter(name__startswith="bench_noop_").exists()
    assert not {"bench_baseline_process", "bench_baseline_step"} & _tables()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "forkbomb"}, "--executor must be one of inline, threadpool, celery"),
        ({"executor": "threadpool", "workers": "1,x"}, "--workers must be a comma-separated list"),
        ({"executor": "threadpool", "workers": "0"}, "--workers must be a comma-separated list"),
        ({"workers": "2"}, "--workers applies to --executor threadpool and celery"),
    ],
)
def test_bench_engine_refuses_bad_executor_options(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("bench_engine", processes=1, steps=1, **options, stdout=StringIO())
    assert not Process.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bench_engine_payload_reports_the_step_log_bytes_of_engine_and_baseline():
    out = StringIO()

    call_command("bench_engine", processes=2, steps=3, payload=2000, stdout=out, stderr=StringIO())

    output = out.getvalue()
    line = re.search(r"^step log: +engine ([\d,.]+) kB per process \(([\d,]+) bytes per body step\); "
                     r"baseline .* \(([\d,]+) bytes per body step\); each body step adds 2,000 bytes", output,
                     re.MULTILINE)
    assert line, output
    engine_per_step, baseline_per_step = (int(line.group(i).replace(",", "")) for i in (2, 3))
    # Each step adds 2,000 bytes of random text: both logs hold about that per step, not the whole state.
    assert 2000 <= engine_per_step < 4000 and 2000 <= baseline_per_step < 3000
    assert re.search(r"^client CPU: +engine [\d.]+ ms/step, baseline [\d.]+ ms/step", output, re.MULTILINE)
    assert not Process.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bench_detail_reports_the_size_and_time_of_the_api_detail_and_the_admin_page():
    out = StringIO()

    call_command("bench_detail", steps=60, payload=50, requests=2, stdout=out, stderr=StringIO())

    output = out.getvalue()
    assert re.search(r"^process: +60 steps adding 50 bytes each: 62 log rows", output, re.MULTILINE), output
    assert re.search(r"^API detail: +[\d,.]+ kB +p50 +[\d.]+ ms +p95 +[\d.]+ ms", output, re.MULTILINE), output
    assert re.search(r"^admin page: +[\d,.]+ kB +p50 +[\d.]+ ms +p95 +[\d.]+ ms", output, re.MULTILINE), output
    assert not Process.objects.exists()
    assert not Workflow.objects.filter(name__startswith="bench_").exists()
