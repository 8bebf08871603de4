"""The scheduler: scheduled system tasks (validate, clean-up), the schedule, and one tick for every scheduler."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from processes import scheduler, scheduler_thread
from processes.engine import current_state
from processes.engine_settings import set_engine_paused
from processes.models import IdempotencyKey, Process, ProcessSubscription, ScheduledRun
from processes.scheduler import parse_schedule, start_due_tasks, tick
from processes.services import start_process
from subscriptions.models import Product
from tests.factories import UserFactory
from tests.processes import flows
from workflows.errors import SubscriptionOutOfSync
from workflows.node.products import NodeProduct

db_tx = pytest.mark.django_db(transaction=True)


def node_subscription(name: str, *, active: bool = True, insync: bool = True):
    model = NodeProduct.new(Product.objects.get(name="Node"), "customer-1", f"Node {name}")
    model.node.node_name = name
    model.node.node_role = "core"
    model.node.inventory_id = 1
    model.subscription.provision()
    if active:
        model.subscription.activate()
    model.subscription.insync = insync
    model.save()
    return model.subscription


def validations_of(subscription) -> int:
    return ProcessSubscription.objects.filter(
        subscription=subscription, process__workflow__name="validate_node"
    ).count()


def make_old(process: Process, days: float) -> None:
    then = timezone.now() - timedelta(days=days)
    Process.objects.filter(pk=process.pk).update(started_at=then, last_modified_at=then)


# --- task_validate_subscriptions ---------------------------------------------------------------------
@db_tx
def test_validate_task_starts_validate_node_for_in_sync_active_node_subscriptions_only(active_node):
    out_of_sync = node_subscription("rtr-2", insync=False)
    provisioning = node_subscription("rtr-3", active=False)

    task = start_process("task_validate_subscriptions")

    assert task.status == "completed"
    state = current_state(task)
    assert (state["validations_started"], state["validations_refused"]) == (1, 0)
    assert state["refused_subscriptions"] == []
    assert validations_of(active_node) == 1
    assert validations_of(out_of_sync) == 0
    assert validations_of(provisioning) == 0
    validation = Process.objects.get(workflow__name="validate_node")
    assert validation.status in ("completed", "failed")  # it ran (inline: once the task's step committed)
    assert validation.created_by == "system"  # the task's actor; the scheduler's when it starts the task


@db_tx
def test_validate_task_counts_refusals_instead_of_failing(active_node, monkeypatch):
    second = node_subscription("rtr-2")
    real_start = start_process

    def start_or_refuse(name, *, subscription_id=None, **kwargs):
        if str(subscription_id) == str(second.subscription_id):
            # As if another process had taken it out of sync between the query and the start.
            raise SubscriptionOutOfSync(f"subscription {subscription_id} is out of sync")
        return real_start(name, subscription_id=subscription_id, **kwargs)

    monkeypatch.setattr("processes.services.start_process", start_or_refuse)

    task = start_process("task_validate_subscriptions")

    assert task.status == "completed"
    state = current_state(task)
    assert (state["validations_started"], state["validations_refused"]) == (1, 1)
    assert state["refused_subscriptions"] == [str(second.subscription_id)]
    assert validations_of(active_node) == 1
    assert validations_of(second) == 0


# --- task_clean_up_tasks -----------------------------------------------------------------------------
@db_tx
def test_clean_up_deletes_old_completed_tasks_and_old_keys_and_keeps_the_rest(catalogue, settings):
    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 30, "IDEMPOTENCY_KEY_RETENTION_HOURS": 1}
    old_task = start_process("task_check_products")
    recent_task = start_process("task_check_products")
    old_workflow = start_process("t_writes")
    flows.CONTROL["fail_times"] = 1
    old_failed_task_like = start_process("t_writes")  # failed: kept, like any unfinished process
    for process in (old_task, old_workflow, old_failed_task_like):
        make_old(process, days=40)
    make_old(recent_task, days=29)
    user = UserFactory()
    now = timezone.now()
    old_key = IdempotencyKey.objects.create(user=user, key="old", body_hash="x", process=old_workflow,
                                            created_at=now - timedelta(hours=30))
    # Younger than IDEMPOTENCY_KEY_KEEP (24 h): kept although the setting says 1 hour.
    young_key = IdempotencyKey.objects.create(user=user, key="young", body_hash="x", process=old_workflow,
                                              created_at=now - timedelta(hours=23))

    cleanup = start_process("task_clean_up_tasks")

    assert cleanup.status == "completed"
    state = current_state(cleanup)
    assert (state["tasks_deleted"], state["idempotency_keys_deleted"]) == (1, 1)
    assert not Process.objects.filter(pk=old_task.pk).exists()
    kept = {old_workflow.pk, old_failed_task_like.pk, recent_task.pk, cleanup.pk}
    assert kept <= set(Process.objects.values_list("pk", flat=True))
    assert not IdempotencyKey.objects.filter(pk=old_key.pk).exists()
    assert IdempotencyKey.objects.filter(pk=young_key.pk).exists()


@db_tx
def test_clean_up_keeps_an_old_task_whose_idempotency_key_is_still_young(catalogue, settings):
    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 0}
    task = start_process("task_check_products")
    IdempotencyKey.objects.create(user=UserFactory(), key="k", body_hash="x", process=task)
    make_old(task, days=1)

    cleanup = start_process("task_clean_up_tasks")

    assert current_state(cleanup)["tasks_deleted"] == 0
    assert Process.objects.filter(pk=task.pk).exists()


# --- the schedule ------------------------------------------------------------------------------------
AT_3 = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


@db_tx
def test_a_due_task_starts_once_per_period(catalogue, settings):
    settings.TIME_ZONE = "UTC"
    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "daily 02:00"}}

    first = start_due_tasks(AT_3)

    assert len(first) == 1
    assert Process.objects.get(pk=first[0]).status == "completed"
    assert Process.objects.get(pk=first[0]).created_by == "scheduler"
    run = ScheduledRun.objects.get()
    assert (run.task, run.period_start, run.process_id) == ("task_check_products", AT_3 - timedelta(hours=1), first[0])
    assert start_due_tasks(AT_3) == []  # called again: the same period
    assert start_due_tasks(AT_3 + timedelta(hours=20)) == []  # 23:00: still the period that began at 02:00
    assert len(start_due_tasks(AT_3 + timedelta(hours=23))) == 1  # 02:00 the next day: a new period
    assert Process.objects.filter(workflow__name="task_check_products").count() == 2


@db_tx
def test_nothing_is_started_while_the_engine_is_paused_and_the_run_is_made_up_after(catalogue, settings):
    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "every 10 minutes"}}
    set_engine_paused(True)

    assert start_due_tasks(AT_3) == []
    assert not ScheduledRun.objects.exists()

    set_engine_paused(False)
    assert len(start_due_tasks(AT_3 + timedelta(minutes=5))) == 1


@pytest.mark.requires_postgres
@db_tx
def test_two_schedulers_at_once_start_a_due_task_once(catalogue, settings, monkeypatch, caplog):
    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "daily 02:00"}}

    def slow_start(*args, **kwargs):
        # Hold the ScheduledRun row uncommitted a while: the other scheduler reaches its insert meanwhile.
        time.sleep(0.3)
        return start_process(*args, **kwargs)

    monkeypatch.setattr(scheduler, "start_process", slow_start)
    barrier = threading.Barrier(2)
    results: list[list] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(start_due_tasks(AT_3))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    with caplog.at_level("INFO", logger="processes.scheduler"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert errors == []
    assert sorted(len(started) for started in results) == [0, 1]
    assert "another scheduler started it" in caplog.text  # the second one did reach its insert
    assert ScheduledRun.objects.count() == 1
    assert Process.objects.filter(workflow__name="task_check_products").count() == 1


def test_daily_periods_follow_the_time_zone_and_every_n_minutes_counts_from_midnight_utc(settings):
    settings.TIME_ZONE = "Europe/Amsterdam"  # UTC+1 in January
    [daily, every] = parse_schedule({"task_check_products": "daily 02:00", "task_clean_up_tasks": "every 15 minutes"})

    assert daily.period_start(datetime(2026, 1, 10, 1, 30, tzinfo=UTC)) == datetime(2026, 1, 10, 1, 0, tzinfo=UTC)
    assert daily.period_start(datetime(2026, 1, 10, 0, 30, tzinfo=UTC)) == datetime(2026, 1, 9, 1, 0, tzinfo=UTC)
    assert every.period_start(datetime(2026, 1, 10, 10, 7, 59, tzinfo=UTC)) == datetime(2026, 1, 10, 10, 0, tzinfo=UTC)
    assert every.period_start(datetime(2026, 1, 10, 10, 15, tzinfo=UTC)) == datetime(2026, 1, 10, 10, 15, tzinfo=UTC)


def test_the_default_schedule_and_the_environment_form_parse():
    assert [(s.task, s.text) for s in parse_schedule()] == [
        ("task_validate_subscriptions", "daily 02:00"), ("task_clean_up_tasks", "daily 03:00"),
    ]
    parsed = parse_schedule("task_clean_up_tasks=every 30 minutes; task_validate_subscriptions=off")
    assert [(s.task, s.every_minutes) for s in parsed] == [("task_clean_up_tasks", 30)]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"task_nope": "daily 02:00"}, "'task_nope' is not a known task; tasks that can be scheduled: "),
        ({"t_writes": "daily 02:00"}, "'t_writes' is a workflow, not a task"),
        ({"task_clean_up_tasks": "weekly"}, "'weekly' is not a schedule: write \"daily HH:MM\""),
        ({"task_clean_up_tasks": "daily 24:00"}, "no such time of day"),
        ({"task_clean_up_tasks": "every 0 minutes"}, "N must be from 1 to 1440"),
        ({"task_clean_up_tasks": 5}, "must be a string"),
        (["task_clean_up_tasks"], "must be a dict of task name to schedule"),
        ("task_clean_up_tasks daily 03:00", 'write "task=schedule;task=schedule"'),
    ],
)
def test_a_bad_schedule_is_refused_by_name(settings, schedule, message):
    settings.ORCHESTRATOR = {"SCHEDULE": schedule}

    with pytest.raises(ImproperlyConfigured, match='ORCHESTRATOR\\["SCHEDULE"\\]') as raised:
        start_due_tasks(AT_3)

    assert message in str(raised.value)


# --- tick: one loop for every scheduler --------------------------------------------------------------
@db_tx
def test_tick_retries_recovers_and_starts_scheduled_tasks(catalogue, settings):
    base = {"RETRYSTEP_MAX_TRIES": 3, "RETRYSTEP_BACKOFF_SECONDS": 0.0,
            "SCHEDULE": {"task_check_products": "every 5 minutes"}}
    settings.ORCHESTRATOR = {**base, "EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    stalled = start_process("t_writes")  # its worker never came: handed over, never taken
    settings.ORCHESTRATOR = base
    flows.CONTROL["retry_fail_times"] = 1
    waiting = start_process("t_retry")
    assert waiting.status == "waiting"

    # Once its hand-over is due again (RESEND_AFTER_SECONDS, 300 by default).
    report = tick(timezone.now() + timedelta(seconds=301))

    assert report.retried == [waiting.pk]
    assert report.recovered == [stalled.pk]
    assert len(report.started) == 1
    assert report.failed == []
    assert set(Process.objects.filter(pk__in=[stalled.pk, waiting.pk, *report.started])
               .values_list("status", flat=True)) == {"completed"}


@db_tx
def test_a_failing_part_of_the_tick_is_logged_and_the_others_still_run(catalogue, settings, monkeypatch, caplog):
    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "every 5 minutes"}}

    def broken(now):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(scheduler, "retry_due_processes", broken)

    report = tick()

    assert report.failed == ["broken"]
    assert len(report.started) == 1
    assert "database hiccup" in caplog.text


@db_tx
def test_run_scheduler_once_ticks(catalogue, settings, capsys):
    settings.ORCHESTRATOR = {"SCHEDULE": {"task_check_products": "every 5 minutes"}}

    call_command("run_scheduler", "--once")

    assert "started 1 scheduled task(s)" in capsys.readouterr().out


# --- the embedded scheduler thread ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "environ", "serving"),
    [
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),  # the autoreloader's child
        (["manage.py", "runserver"], {}, False),  # the autoreloader's parent: only watches files
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["manage.py", "migrate"], {"RUN_MAIN": "true"}, False),
        (["pytest"], {}, False),
    ],
)
def test_only_a_serving_process_runs_the_embedded_scheduler(argv, environ, serving):
    assert scheduler_thread.is_serving_process(argv, environ) is serving


def test_the_embedded_scheduler_is_off_by_default(settings):
    settings.ORCHESTRATOR = {}
    assert scheduler_thread.maybe_start() is False


def test_the_embedded_thread_survives_a_failing_tick(monkeypatch):
    calls: list[int] = []
    ticked_twice = threading.Event()

    def flaky_tick():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first tick fails")
        ticked_twice.set()
        return scheduler.TickReport()

    monkeypatch.setattr(scheduler, "tick", flaky_tick)
    monkeypatch.setattr(scheduler, "parse_schedule", lambda: [])
    try:
        assert scheduler_thread.start(interval=0.01) is True
        assert scheduler_thread.start(interval=0.01) is False  # one per process
        assert ticked_twice.wait(5)
    finally:
        scheduler_thread.stop()
    assert not any(t.name == scheduler_thread.THREAD_NAME for t in threading.enumerate())


@db_tx
def test_clean_up_deletes_in_bounded_batches(catalogue, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 30, "CLEANUP_BATCH_SIZE": 3}
    old = [start_process("task_check_products") for _ in range(10)]
    for process in old:
        make_old(process, days=40)

    with CaptureQueriesContext(connection) as queries:
        cleanup = start_process("task_clean_up_tasks")

    assert cleanup.status == "completed" and current_state(cleanup)["tasks_deleted"] == 10
    assert not Process.objects.filter(pk__in=[p.pk for p in old]).exists()
    deletes = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith(f'DELETE FROM "{Process._meta.db_table}"')]
    # Ten processes, three at a time: four statements, none naming more than three ids.
    assert len(deletes) == 4
    uuid_text = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
    assert [len(uuid_text.findall(sql)) for sql in deletes] == [3, 3, 3, 1]


@db_tx
def test_clean_up_keeps_each_subscriptions_newest_validation_and_every_failed_one(active_node, settings):
    from workflows.node import ipam

    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 30}
    model = NodeProduct.load(active_node.pk)
    model.node.ipv4_loopback = ipam.lookup_loopback("rtr-1")
    model.save()
    oldest, older = (start_process("validate_node", subscription_id=active_node.pk) for _ in range(2))
    newest = start_process("validate_node", subscription_id=active_node.pk)
    for days, process in ((50, oldest), (45, older), (40, newest)):
        make_old(process, days=days)
    assert {oldest.status, older.status, newest.status} == {"completed"}
    other = node_subscription("rtr-2")
    other_failed = start_process("validate_node", subscription_id=other.pk)  # no loopback: fails
    assert other_failed.status == "failed"
    make_old(other_failed, days=60)

    cleanup = start_process("task_clean_up_tasks")

    assert current_state(cleanup)["validations_deleted"] == 2
    assert set(Process.objects.filter(workflow__name="validate_node").values_list("pk", flat=True)) == {
        newest.pk, other_failed.pk}
