"""GET /metrics: Prometheus text read from the database, counters that only grow, and who may read it."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from processes import step_metrics
from processes.engine_settings import pause_engine
from processes.metrics_access import check_metrics_allowed_ips
from processes.models import (
    Process,
    ProcessLease,
    ProcessStatus,
    ProcessStep,
    SchedulerTick,
    StepMetricsCursor,
    WorkflowStepTotals,
)
from processes.scheduler import tick
from processes.services import start_process
from processes.step_metrics import fold
from tests.factories import ProcessFactory, ProcessStepFactory, WorkflowFactory
from tests.processes import flows

pytestmark = pytest.mark.requires_postgres
db_tx = pytest.mark.django_db(transaction=True)
URL = "/metrics"
LOCAL = "127.0.0.1"


def scrape(client: Client | None = None, address: str = LOCAL, **headers: str) -> dict[tuple, float]:
    """One scrape, parsed as Prometheus text: {(sample name, sorted labels): value}."""
    response = (client or Client()).get(URL, REMOTE_ADDR=address, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        assert family.documentation, f"{family.name} has no HELP text"
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- values that move --------------------------------------------------------------------------------
@db_tx
def test_metrics_move_when_a_process_completes_and_when_one_fails():
    before = scrape()  # the first scrape starts the counting
    assert value(before, "orchestrator_step_duration_seconds_count", workflow="t_writes") == 0

    start_process("t_writes")  # Start, Write A, Write B then maybe fail, Write C, Done
    done = scrape()

    assert value(done, "orchestrator_step_duration_seconds_count", workflow="t_writes") == 5
    assert value(done, "orchestrator_step_duration_seconds_bucket", workflow="t_writes", le="+Inf") == 5
    assert value(done, "orchestrator_process_completions_total", workflow="t_writes") == 1
    assert value(done, "orchestrator_process_failures_total", workflow="t_writes") == 0
    assert value(done, "orchestrator_processes_by_status", status="completed") == 1
    assert value(done, "orchestrator_processes", status="failed", workflow="t_writes") == 0

    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes")  # Start, Write A, Write B then maybe fail (failed)
    after = scrape()

    assert Process.objects.get(pk=failed.pk).status == ProcessStatus.FAILED
    assert value(after, "orchestrator_step_duration_seconds_count", workflow="t_writes") == 8
    assert value(after, "orchestrator_process_failures_total", workflow="t_writes") == 1
    assert value(after, "orchestrator_process_completions_total", workflow="t_writes") == 1
    assert value(after, "orchestrator_processes", status="failed", workflow="t_writes") == 1
    assert value(after, "orchestrator_processes_by_status", status="failed") == 1
    assert value(after, "orchestrator_processes_by_status", status="completed") == 1
    # A scrape with nothing new changes no counter.
    assert scrape() == after


@pytest.mark.django_db
def test_the_histogram_counts_exactly_the_steps_run_in_their_buckets():
    scrape()
    process = ProcessFactory(workflow=WorkflowFactory(name="t_timed"))
    for seconds in (0.003, 0.2, 0.2, 7.0, 5000.0):
        ProcessStepFactory(process=process, seconds=seconds)
    ProcessStepFactory(process=process, status="callback")  # an answer arriving: not a step run

    samples = scrape()

    def bucket(le: str) -> float:
        return value(samples, "orchestrator_step_duration_seconds_bucket", workflow="t_timed", le=le)

    assert [bucket(le) for le in ("0.005", "0.1", "0.25", "5.0", "10.0", "3600.0", "+Inf")] == [1, 1, 3, 3, 4, 4, 5]
    assert value(samples, "orchestrator_step_duration_seconds_count", workflow="t_timed") == 5
    assert value(samples, "orchestrator_step_duration_seconds_sum", workflow="t_timed") == pytest.approx(5007.403)


@pytest.mark.django_db
def test_callback_deadlines_passed_are_counted_as_failures_of_their_workflow():
    scrape()
    process = ProcessFactory(workflow=WorkflowFactory(name="t_callback"))
    ProcessStepFactory(process=process, status="failed", error_type="CallbackTimeout")
    ProcessStepFactory(process=process, status="failed", error_type="RuntimeError")
    ProcessStepFactory(process=process, status="waiting", error_type="RuntimeError")  # a retrystep will retry

    samples = scrape()

    assert value(samples, "orchestrator_callback_deadlines_passed_total", workflow="t_callback") == 1
    assert value(samples, "orchestrator_process_failures_total", workflow="t_callback") == 2


@db_tx
def test_counters_never_go_down_when_the_clean_up_deletes_the_old_tasks(catalogue, settings):
    scrape()
    task = start_process("task_check_products")
    counted = scrape()
    steps = value(counted, "orchestrator_step_duration_seconds_count", workflow="task_check_products")
    assert steps == 3  # Start, Check products, Done
    then = timezone.now() - timedelta(days=2)
    Process.objects.filter(pk=task.pk).update(started_at=then, last_modified_at=then)

    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 1}
    start_process("task_clean_up_tasks")
    after = scrape()

    assert not Process.objects.filter(pk=task.pk).exists()
    assert not ProcessStep.objects.filter(process_id=task.pk).exists()
    assert value(after, "orchestrator_step_duration_seconds_count", workflow="task_check_products") == steps
    assert value(after, "orchestrator_process_completions_total", workflow="task_check_products") == 1
    for key, number in counted.items():
        if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
            assert after[key] >= number, key


@pytest.mark.django_db
def test_a_fold_bounded_per_scrape_catches_up_over_the_next_ones_without_counting_twice():
    fold()
    process = ProcessFactory(workflow=WorkflowFactory(name="t_backlog"))
    ProcessStepFactory.create_batch(25, process=process)

    counts = []
    for _ in range(4):
        fold(max_rows=10)
        counts.append(WorkflowStepTotals.objects.get(workflow="t_backlog").steps)

    assert counts == [10, 20, 25, 25]


@pytest.mark.django_db
def test_a_fold_that_fails_halfway_keeps_nothing_and_the_next_one_counts_each_step_once(monkeypatch):
    fold()
    ProcessStepFactory(process=ProcessFactory(workflow=WorkflowFactory(name="t_one")))
    ProcessStepFactory(process=ProcessFactory(workflow=WorkflowFactory(name="t_two")))
    cursor_before = StepMetricsCursor.objects.get().last_step_id
    real_save = WorkflowStepTotals.save

    def fail_on_the_second(self, *args, **kwargs):
        if self.workflow == "t_two":
            raise RuntimeError("the database went away")
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowStepTotals, "save", fail_on_the_second)
    with pytest.raises(RuntimeError):
        fold()
    assert not WorkflowStepTotals.objects.exists()  # t_one's row rolled back with the rest
    assert StepMetricsCursor.objects.get().last_step_id == cursor_before

    monkeypatch.setattr(WorkflowStepTotals, "save", real_save)
    fold()
    fold()
    assert dict(WorkflowStepTotals.objects.values_list("workflow", "steps")) == {"t_one": 1, "t_two": 1}


@db_tx
def test_a_step_committed_after_a_later_one_was_counted_is_counted_once_when_it_appears():
    fold()
    process = ProcessFactory(workflow=WorkflowFactory(name="t_late"))
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                ProcessStepFactory(process=process)  # takes its id now, commits later
                inserted.set()
                release.wait(10)
        finally:
            connection.close()
            done.set()

    threading.Thread(target=slow_writer).start()
    assert inserted.wait(10)
    later = ProcessStepFactory(process=process)  # a higher id, committed first

    fold()
    assert WorkflowStepTotals.objects.get(workflow="t_late").steps == 1
    assert StepMetricsCursor.objects.get().last_step_id == later.id
    assert [gap[:2] for gap in StepMetricsCursor.objects.get().gaps] == [[later.id - 1, later.id - 1]]

    release.set()
    assert done.wait(10)
    fold()
    fold()
    assert WorkflowStepTotals.objects.get(workflow="t_late").steps == 2
    assert StepMetricsCursor.objects.get().gaps == []


@pytest.mark.django_db
def test_a_gap_that_never_fills_is_given_up_after_the_wait(monkeypatch):
    fold()
    process = ProcessFactory(workflow=WorkflowFactory(name="t_gap"))
    first = ProcessStepFactory(process=process)
    ProcessStepFactory(process=process)
    first.delete()  # as a rolled-back insert would leave it: an id that never appears

    fold()
    assert len(StepMetricsCursor.objects.get().gaps) == 1
    fold(timezone.now() + step_metrics.GAP_WAIT + timedelta(seconds=1))
    assert StepMetricsCursor.objects.get().gaps == []
    assert WorkflowStepTotals.objects.get(workflow="t_gap").steps == 1


@db_tx
def test_two_scrapes_at_once_never_count_a_step_twice():
    process = ProcessFactory(workflow=WorkflowFactory(name="t_race"))
    scrape()
    inserted = 0
    for round_ in range(50):
        ProcessStepFactory.create_batch(3, process=process)
        inserted += 3
        barrier = threading.Barrier(2)
        seen: list[float] = []

        def scraper(barrier: threading.Barrier = barrier, seen: list[float] = seen) -> None:
            try:
                barrier.wait(10)
                seen.append(value(scrape(), "orchestrator_step_duration_seconds_count", workflow="t_race"))
            finally:
                connection.close()

        threads = [threading.Thread(target=scraper) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        # One of the two folded the new rows; the other folded nothing or read the totals as they were.
        assert WorkflowStepTotals.objects.get(workflow="t_race").steps == inserted, f"round {round_}"
        assert len(seen) == 2 and max(seen) == inserted and min(seen) >= inserted - 3, seen


# --- the gauges --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_processes_waiting_for_a_worker_and_the_oldest_ones_age():
    workflow = WorkflowFactory(name="t_queued")
    now = timezone.now()
    for minutes in (2, 7):
        process = ProcessFactory(workflow=workflow, status=ProcessStatus.RUNNING)
        ProcessLease.objects.create(process=process, owner="", queued_at=now - timedelta(minutes=minutes),
                                    expires_at=now + timedelta(minutes=5))
    ProcessFactory(workflow=workflow, status=ProcessStatus.RUNNING, leased=True)  # a worker took this one

    samples = scrape()

    assert value(samples, "orchestrator_processes_waiting_for_worker") == 2
    assert 7 * 60 <= value(samples, "orchestrator_oldest_waiting_for_worker_age_seconds") < 8 * 60
    assert value(samples, "orchestrator_processes", status="running", workflow="t_queued") == 3
    assert value(samples, "orchestrator_runs_in_progress") == 1


@pytest.mark.django_db
def test_engine_state_and_scheduler_last_tick(settings):
    settings.ORCHESTRATOR = {"SCHEDULE": {}}
    assert value(scrape(), "orchestrator_scheduler_last_tick_timestamp_seconds") == 0
    call_command("run_scheduler", "--once", stdout=StringIO())
    pause_engine(by="ops")
    samples = scrape()

    assert abs(value(samples, "orchestrator_scheduler_last_tick_timestamp_seconds") - timezone.now().timestamp()) < 60
    assert value(samples, "orchestrator_engine_paused") == 1
    assert value(samples, "orchestrator_engine_state", state="paused") == 1
    assert value(samples, "orchestrator_engine_state", state="running") == 0


@pytest.mark.django_db
def test_every_tick_updates_the_one_heartbeat_row(settings):
    settings.ORCHESTRATOR = {"SCHEDULE": {}}
    tick()
    first = SchedulerTick.objects.get().last_tick_at
    tick()
    assert SchedulerTick.objects.count() == 1
    assert SchedulerTick.objects.get().last_tick_at > first


# --- access ------------------------------------------------------------------------------------------
def refused(address: str = LOCAL, **headers: str):
    response = Client().get(URL, REMOTE_ADDR=address, **headers)
    body = response.content.decode()
    assert "orchestrator_" not in body and body.count("\n") == 1, body
    return response.status_code, body.strip()


@pytest.mark.django_db
def test_with_nothing_set_only_this_machine_may_read_the_metrics():
    assert scrape(address="127.0.0.1") and scrape(address="::1") and scrape(address="::ffff:127.0.0.1")
    assert refused("10.0.0.5") == (403, "metrics: refused: address 10.0.0.5 is not allowed")
    # A forwarded-for header is the client's word, not its address.
    assert refused("10.0.0.5", HTTP_X_FORWARDED_FOR="127.0.0.1")[0] == 403


@pytest.mark.django_db
def test_an_allow_list_lets_in_its_networks_only(settings):
    settings.ORCHESTRATOR = {"METRICS_ALLOWED_IPS": ("10.0.0.0/8", "192.0.2.7")}

    assert scrape(address="10.20.30.40") and scrape(address="192.0.2.7")
    assert refused("127.0.0.1")[0] == 403
    assert refused("192.0.2.8")[0] == 403


@pytest.mark.django_db
def test_a_token_is_required_when_set_and_compared_whole(settings):
    settings.ORCHESTRATOR = {"METRICS_TOKEN": "s3cret-token"}

    assert scrape(address="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-token")
    missing = Client().get(URL, REMOTE_ADDR="203.0.113.9")
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert refused("127.0.0.1") == (401, "metrics: refused: a bearer token is required "
                                         "(Authorization: Bearer <token>)")
    for wrong in ("Bearer s3cret", "Bearer s3cret-token-and-more", "Basic s3cret-token", "s3cret-token"):
        assert refused("127.0.0.1", HTTP_AUTHORIZATION=wrong)[0] == 401, wrong


@pytest.mark.django_db
def test_with_both_set_the_token_does_not_open_other_addresses(settings):
    settings.ORCHESTRATOR = {"METRICS_TOKEN": "s3cret-token", "METRICS_ALLOWED_IPS": ("10.0.0.0/8",)}

    assert scrape(address="10.1.1.1", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert refused("192.0.2.1", HTTP_AUTHORIZATION="Bearer s3cret-token")[0] == 403
    assert refused("10.1.1.1")[0] == 401


@pytest.mark.django_db
def test_a_bad_allow_list_refuses_everyone_and_fails_the_check(settings):
    settings.ORCHESTRATOR = {"METRICS_ALLOWED_IPS": ("10.0.0.0/8", "10.0.0.300")}

    status, body = refused("10.0.0.1")

    assert status == 403 and "'10.0.0.300' is not an IP address or network" in body
    assert [error.id for error in check_metrics_allowed_ips()] == ["processes.E111"]


@pytest.mark.django_db
def test_only_get_and_head_are_answered():
    assert Client().post(URL, REMOTE_ADDR=LOCAL).status_code == 405
