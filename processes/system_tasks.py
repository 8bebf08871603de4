"""System tasks the scheduler starts (ORCHESTRATOR["SCHEDULE"]): nightly validation and clean-up.

Both can also be started by hand like any task. They start and delete processes, so they live in the processes
app (found by autodiscovery through processes/workflows.py): the workflows app never imports processes.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import OrchestratorError
from processes import services
from processes.families import kept_for_their_children
from processes.idempotency import IDEMPOTENCY_KEY_KEEP
from processes.models import IdempotencyKey, Process, ProcessStatus, ScheduledRun
from processes.notify_send import delete_old as delete_old_notifications
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Subscription
from workflows.dsl import Repeat, State, StepList, again, begin, step
from workflows.models import Target
from workflows.predicates import no_unfinished_instance
from workflows.registry import all_workflows, task

logger = logging.getLogger(__name__)

# The state keeps counts and at most this many ids: a task's state is logged with every step.
MAX_IDS_IN_STATE = 20


@step("Start validate workflows")
def start_validations(created_by: str, validation_cursor: str | None = None, validations_started: int = 0,
                      validations_refused: int = 0, refused_subscriptions: list[str] | None = None) -> State | Repeat:
    """Start the validate workflow of every active, in-sync subscription whose product has one.

    VALIDATION_BATCH_SIZE subscriptions per run, in id order after `validation_cursor` (the last one a
    committed run handled), each run its own transaction: a start locks its subscription's row until its
    transaction commits, so no subscription is held longer than one batch, and a crash, a failure and retry
    or a pause continues after the last committed batch, starting none twice and skipping none. A
    subscription that becomes eligible meanwhile is validated when its id comes after the cursor.

    A start that is refused (the subscription went out of sync meanwhile, or another reason) is counted,
    not failed: the next run of the task tries again.
    """
    size = max(int(orchestrator_setting("VALIDATION_BATCH_SIZE")), 1)
    specs = [spec for spec in all_workflows().values() if spec.target == Target.VALIDATE]
    subscriptions = Subscription.objects.filter(insync=True, status=SubscriptionLifecycle.ACTIVE)
    if all(spec.product_types for spec in specs):
        subscriptions = subscriptions.filter(product__product_type__in={t for s in specs for t in s.product_types})
    if validation_cursor is not None:
        subscriptions = subscriptions.filter(pk__gt=validation_cursor)
    # One more than a batch tells whether another run is needed, without an empty last run.
    batch = list(subscriptions.order_by("pk").values_list("pk", "product__product_type")[:size + 1]) if specs else []
    more, batch = len(batch) > size, batch[:size]

    started = 0
    refused: list[str] = []
    for subscription_id, product_type in batch:
        for spec in specs:
            if spec.product_types and product_type not in spec.product_types:
                continue
            try:
                # Through the module: what starts a process is looked up when called (tests put a failing one
                # in its place to make a batch fail part-way).
                services.start_process(spec.name, subscription_id=subscription_id, by=created_by)
            except OrchestratorError as exc:  # refused: nothing was written (its savepoint rolled back)
                logger.info("validation of subscription %s not started: %s", subscription_id, exc)
                refused.append(str(subscription_id))
            else:
                started += 1
    logger.info("validate workflows: %d started, %d refused in this batch of %d subscription(s)%s",
                started, len(refused), len(batch), "; more to come" if more else "")
    state = {
        "validations_started": validations_started + started,
        "validations_refused": validations_refused + len(refused),
        "refused_subscriptions": [*(refused_subscriptions or []), *refused][:MAX_IDS_IN_STATE],
        "validation_cursor": str(batch[-1][0]) if batch else validation_cursor,
    }
    return again(state) if more else state


@task("Start the validate workflow of every in-sync active subscription", run_predicate=no_unfinished_instance)
def task_validate_subscriptions() -> StepList:
    return begin >> start_validations


@step("Delete old completed tasks and idempotency keys")
def delete_old_tasks() -> State:
    """Completed tasks' processes (with their logs) older than TASK_RETENTION_DAYS (completed validations
    too, but each subscription's newest), in batches of CLEANUP_BATCH_SIZE; idempotency keys older
    than IDEMPOTENCY_KEY_RETENTION_HOURS (at least IDEMPOTENCY_KEY_KEEP), old ScheduledRun rows, and
    notifications sent or given up more than NOTIFY_RETENTION_DAYS ago.

    Other workflows' processes are kept: they are the audit record of their subscriptions' changes. So are a
    family's: a child goes only with the top of its family, and a family with a workflow's process (or an
    unfinished one) below its top is kept whole (processes.families).
    """
    now = timezone.now()
    task_days = float(orchestrator_setting("TASK_RETENTION_DAYS"))
    task_cutoff = now - timedelta(days=task_days)
    key_cutoff = now - max(timedelta(hours=float(orchestrator_setting("IDEMPOTENCY_KEY_RETENTION_HOURS"))),
                           IDEMPOTENCY_KEY_KEEP)

    # A task started with an idempotency key younger than its retention is kept with it (the key would go
    # with the process), so a client repeating that start still gets the same process.
    recent_key = IdempotencyKey.objects.filter(process=OuterRef("pk"), created_at__gte=key_cutoff)
    tasks_deleted = _delete_in_batches(Process.objects.filter(
        is_task=True, status=ProcessStatus.COMPLETED, last_modified_at__lt=task_cutoff, parent__isnull=True,
    ).exclude(Exists(recent_key)))
    # Validations change nothing: their completed processes go like tasks', except each subscription's
    # newest validation, which is its last result (shown on its page).
    newer = Process.objects.filter(
        workflow__target=Target.VALIDATE,
        process_subscriptions__subscription=OuterRef("process_subscriptions__subscription"),
        started_at__gt=OuterRef("started_at"),
    )
    validations_deleted = _delete_in_batches(Process.objects.filter(
        workflow__target=Target.VALIDATE, status=ProcessStatus.COMPLETED, last_modified_at__lt=task_cutoff,
        parent__isnull=True,
    ).filter(Exists(newer)).exclude(Exists(recent_key)))
    # Keys of the deleted tasks went with them (cascade); these are the old keys of everything else.
    keys_deleted, _ = IdempotencyKey.objects.filter(created_at__lt=key_cutoff).delete()
    # A schedule's period is at most a day: rows two days old can no longer stop a run twice.
    runs_cutoff = now - max(timedelta(days=task_days), timedelta(days=2))
    runs_deleted, _ = ScheduledRun.objects.filter(period_start__lt=runs_cutoff).delete()
    # Notifications sent or given up more than NOTIFY_RETENTION_DAYS ago (never those still to send).
    notifications_deleted = delete_old_notifications(now)
    logger.info("clean-up: deleted %d completed task(s), %d old validation(s), %d idempotency key(s), "
                "%d scheduled run row(s), %d notification(s)", tasks_deleted, validations_deleted, keys_deleted,
                runs_deleted, notifications_deleted)
    return {
        "tasks_deleted": tasks_deleted,
        "validations_deleted": validations_deleted,
        "idempotency_keys_deleted": keys_deleted,
        "scheduled_runs_deleted": runs_deleted,
        "notifications_deleted": notifications_deleted,
        "tasks_completed_before": task_cutoff.isoformat(),
        "idempotency_keys_created_before": key_cutoff.isoformat(),
    }


def _delete_in_batches(processes: QuerySet) -> int:
    """Delete the processes (with their logs) CLEANUP_BATCH_SIZE at a time; how many were deleted.

    One delete of them all would name every id in one statement, and PostgreSQL takes at most 65,535
    parameters: past that, the clean-up would fail outright, every time, and never catch up.
    """
    size = max(int(orchestrator_setting("CLEANUP_BATCH_SIZE")), 1)
    total = 0
    after = None
    while True:
        # On by id from the last batch: the families kept for their children stay, and are not read again.
        batch = list((processes.filter(pk__gt=after) if after else processes).order_by("pk")
                     .values_list("pk", flat=True)[:size])
        if not batch:
            return total
        after = batch[-1]
        kept = kept_for_their_children(batch)
        if len(kept) < len(batch):
            # Their children (all finished tasks) go with them, counted too.
            _, deleted = Process.objects.filter(pk__in=[pk for pk in batch if pk not in kept]).delete()
            total += deleted.get(Process._meta.label, 0)


@task("Delete completed tasks and idempotency keys past their retention", run_predicate=no_unfinished_instance)
def task_clean_up_tasks() -> StepList:
    return begin >> delete_old_tasks
