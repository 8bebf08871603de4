"""`manage.py bench_engine` runs processes through the engine, measures a baseline, and cleans up after itself."""

from __future__ import annotations

import re
from contextlib import nullcontext
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


# --- --fanout: one parent, N children ---------------------------------------------------------------------------
FANOUT_NAMES = ("bench_fanout_", "bench_child_")


def _nothing_of_the_fanout_left() -> None:
    assert not Process.objects.exists()
    assert not ProcessStep.objects.exists()
    assert not Workflow.objects.filter(name__startswith=FANOUT_NAMES).exists()
    assert not [name for name in all_workflows() if name.startswith(FANOUT_NAMES)]
    assert not {"bench_baseline_process", "bench_baseline_step"} & _tables()


def _table_line(executor: str, workers: int, runs: int) -> str:
    """A line of the table: median steps/s, each run's, x baseline, x inline, start, join and merge ms, load
    before>after."""
    each = " ".join([r"[\d,]+"] * runs)
    return (rf"^  {executor} +{workers} +[\d,]+ +{each} +\d+\.\d\d +\d+\.\d\d +\d+\.\d +\d+\.\d +\d+\.\d "
            rf"+(\d+\.\d\d>\d+\.\d\d|n/a)$")


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bench_engine_fanout_prints_baseline_inline_and_a_line_per_worker_count_and_leaves_nothing_behind():
    out = StringIO()

    call_command("bench_engine", fanout=5, steps=2, executor="threadpool", workers="1,2", repeat=2, timeout=60,
                 stdout=out, stderr=StringIO())

    output = out.getvalue()
    # The parent's 5 rows and 5 children x (Start + 2 steps + Done).
    assert "1 parent x 5 children of 2 no-op steps" in output and "= 25 rows" in output, output
    assert re.search(r"^  baseline +1 +[\d,]+ +[\d,]+ [\d,]+ +1\.00 +- +- +- +- ", output, re.MULTILINE), output
    assert re.search(_table_line("inline", 1, 2).replace(r"+\d+\.\d\d +\d+\.\d\d", r"+\d+\.\d\d +1\.00"), output,
                     re.MULTILINE), output
    for workers in (1, 2):
        assert re.search(_table_line("threadpool", workers, 2), output, re.MULTILINE), output
    assert re.search(r"^uptime before: .*load average", output, re.MULTILINE), output
    assert re.search(r"^uptime after: +.*load average", output, re.MULTILINE), output
    assert re.search(r"^machine: +(LOADED|quiet): the 1-minute load was [\d.]+ on \d+ CPUs", output, re.MULTILINE)
    _nothing_of_the_fanout_left()


@pytest.mark.django_db(transaction=True)
def test_bench_engine_fanout_inline_only_prints_the_baseline_and_inline_lines():
    out = StringIO()

    call_command("bench_engine", fanout=3, steps=1, executor="inline", repeat=1, stdout=out, stderr=StringIO())

    output = out.getvalue()
    assert "= 14 rows" in output, output  # 5 + 3 x 3
    assert re.search(_table_line("inline", 1, 1), output, re.MULTILINE), output
    assert "threadpool" not in output.split("uptime before:")[1]
    _nothing_of_the_fanout_left()


@pytest.mark.django_db(transaction=True)
def test_bench_engine_fanout_a_failing_child_fails_the_command_saying_which_and_leaves_nothing_behind(monkeypatch):
    from processes import bench_workflow

    def broken(position: int, payload: int) -> dict:
        raise RuntimeError(f"step {position} broke")

    monkeypatch.setattr(bench_workflow, "step_result", broken)

    with pytest.raises(CommandError, match=r"inline warm-up: child process \S+ \(item 1 of 2\) is failed: "
                                           r".*step 1 broke.*the parent would wait for it forever"):
        call_command("bench_engine", fanout=4, steps=1, executor="inline", repeat=1, stdout=StringIO(),
                     stderr=StringIO())
    _nothing_of_the_fanout_left()


@pytest.mark.django_db(transaction=True)
def test_bench_engine_fanout_that_fails_on_a_later_line_prints_the_lines_measured_before_the_error(monkeypatch):
    from processes.management.commands import _bench_fanout

    real_run_once = _bench_fanout._Bench.run_once

    def threads_break(self, children, check, label):
        if label.startswith("threadpool"):
            raise CommandError("threadpool workers=1 run 1/1: the fan-out of process 123 went wrong: 4 children, not 2")
        return real_run_once(self, children, check, label)

    monkeypatch.setattr(_bench_fanout._Bench, "run_once", threads_break)
    monkeypatch.setattr(_bench_fanout._Bench, "_executor", lambda self, executor, workers: nullcontext(lambda: None))
    out = StringIO()

    with pytest.raises(CommandError, match="went wrong: 4 children, not 2"):
        call_command("bench_engine", fanout=2, steps=1, executor="threadpool", workers="1", repeat=1, stdout=out,
                     stderr=StringIO())

    output = out.getvalue()
    assert re.search(_table_line("inline", 1, 1), output, re.MULTILINE), output
    assert re.search(r"^stopped: +stopped before the rest: threadpool workers=1 run 1/1: the fan-out of process 123 "
                     r"went wrong: 4 children, not 2$", output, re.MULTILINE), output
    assert "  threadpool" not in output
    _nothing_of_the_fanout_left()


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bench_engine_fanout_interrupted_mid_run_stops_the_threads_and_leaves_nothing_behind(monkeypatch):
    from processes.executors import threadpool
    from processes.management.commands import _bench_fanout

    real_wait = _bench_fanout._Bench._wait

    def interrupted(self, parent_id, children, check, label):
        if "run 1" in label:
            raise KeyboardInterrupt  # Ctrl-C with children queued and running on the threads
        return real_wait(self, parent_id, children, check, label)

    monkeypatch.setattr(_bench_fanout._Bench, "_wait", interrupted)

    with pytest.raises(KeyboardInterrupt):
        call_command("bench_engine", fanout=40, steps=2, executor="threadpool", workers="2", repeat=1, timeout=60,
                     stdout=StringIO(), stderr=StringIO())
    assert threadpool._pool is None
    _nothing_of_the_fanout_left()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fanout": 0}, "--fanout must be a whole number from 1 to 10000, not 0"),
        ({"fanout": 10**6}, "--fanout must be a whole number from 1 to 10000, not 1000000"),
        ({"fanout": 5, "repeat": 0}, "--repeat must be a whole number from 1 to 100, not 0"),
        ({"fanout": 5, "processes": 3}, "--processes does not apply to --fanout"),
        ({"fanout": 5, "payload": 100}, "--payload does not apply to --fanout"),
        ({"fanout": 5, "verbose_queries": True}, "--verbose-queries does not apply to --fanout"),
        ({"fanout": 5, "executor": "threadpool,forkbomb"}, "--executor with --fanout takes distinct executors"),
        ({"fanout": 5, "executor": "threadpool,threadpool"}, "--executor with --fanout takes distinct executors"),
        ({"fanout": 5, "executor": "inline", "workers": "2"}, "--workers applies to --executor threadpool and celery"),
        ({"fanout": 5, "workers": "1,1"}, "--workers must be a comma-separated list"),
        ({"repeat": 3}, "--repeat applies to --fanout"),
    ],
)
def test_bench_engine_fanout_refuses_bad_values_in_one_line(options, message):
    with pytest.raises(CommandError, match=re.escape(message)) as refused:
        call_command("bench_engine", **options, stdout=StringIO(), stderr=StringIO())
    assert "\n" not in str(refused.value)
    assert not Process.objects.exists()
    assert not Workflow.objects.filter(name__startswith=FANOUT_NAMES).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("argv", [["--fanout", "abc"], ["--fanout", "1e3"], ["--fanout", "5", "--repeat", "-1"]])
def test_bench_engine_fanout_refuses_a_malformed_number_on_the_command_line(argv):
    with pytest.raises(CommandError, match=r"^Error: argument --(fanout|repeat): must be a whole number from 1 to "):
        call_command("bench_engine", *argv, stdout=StringIO())
