"""Children and their join: a parent's children step (sub-processes, parallel branches) starts its child processes
in the step's own transaction and waits; the last child to end wakes the parent in its own final transaction.

- Creation: every child of the step is created (and linked: parent, step, item, round) in the parent step's
  transaction, so a crash before its commit leaves no child and one after it leaves the parent
  `awaiting_children`, which no run executes: no item ever gets two children. (A unique constraint on
  parent, step, item and round says so in the database too.)
- Waiting holds nothing: the parent is a row in `awaiting_children`, with no run record.
- The join: a child's final transaction (it completed, or was aborted) locks the parent's row and counts the
  step's unfinished children. Counting under that lock, each child sees the others' committed ends, so of two
  last children ending at once exactly one finds none left and wakes the parent (queued, handed to the
  executor after the commit). A child that failed is not ended: the parent waits for its retry or skip.
- The parent's run then takes the step again: every child completed, so their results are merged into the
  state and the step's row is logged. An aborted child fails the parent instead (a retry of the parent starts
  a new child, of the next round, for each aborted item; the completed ones are kept).
- The sweep (scheduler) wakes a parent whose children all ended if a join was missed, and aborts the
  unfinished children of an aborted parent when the cascade after its abort did not get to them.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import NotFound
from processes import leases, statelog, steplog
from processes.dberrors import connection_lost, storable_text
from processes.errors import StepError, WrongProcessStatus
from processes.executors import submit_after_commit
from processes.lookups import current_state, engine_paused, get_process
from processes.models import InputState, InputType, Process, ProcessStatus, ProcessStep, StepStatus
from processes.records import let_go_waiting
from processes.steps import call_timer
from workflows.dsl import Step
from workflows.registry import get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus
ENDED = (P.COMPLETED, P.ABORTED)
# The engine's own keys of every state: not part of a child's result, not merged back from a branch.
ENGINE_KEYS = frozenset({"process_id", "workflow", "created_by"})

Continue = tuple[dict[str, Any], statelog.Since] | None


# --- the parent's step ---------------------------------------------------------------------------------
def run_children_step(locked: steplog.Locked, step: Step, state: dict[str, Any], since: statelog.Since,
                      started: datetime, lease: leases.Lease) -> Continue:
    """A children step, under the parent's row lock: start its children (first run), start new ones for
    aborted items (a retry), or merge the results once every child completed."""
    at = locked.current_step
    latest = latest_children(locked.process_id, at)
    if not latest:
        inputs = _inputs(step, state, locked.acting_user)
        if not inputs:
            return _merge_and_go_on(locked, step, state, since, started, lease, [])
        _start(locked, step, {index: (item, 1) for index, item in enumerate(inputs)})
        return _await(locked, step, state, started, f"started {len(inputs)} child process(es)")
    if any(child["status"] not in ENDED for child in latest):
        # Woken while a child still runs (it cannot be, but a wait again is always safe): no child is
        # started again, and the last one to end wakes this process.
        return _await(locked, step, state, started, "")
    aborted = [child for child in latest if child["status"] == P.ABORTED]
    if aborted:
        # A retry of this process: each aborted item gets a new child; the completed ones are kept.
        _start(locked, step, {child["child_index"]: (_input_of(child["process_id"]), child["child_round"] + 1)
                              for child in aborted})
        return _await(locked, step, state, started, f"started {len(aborted)} new child process(es) for the "
                                                    f"aborted item(s) {_items_text(aborted)}")
    return _merge_and_go_on(locked, step, state, since, started, lease, latest)


def _inputs(step: Step, state: dict[str, Any], acting_user: str) -> list[dict[str, Any]]:
    spec = step.children
    if spec.is_parallel:
        base = {key: value for key, value in state.items() if key not in ENGINE_KEYS}
        return [dict(base) for _ in spec.branch_workflows]
    items = call_timer(spec.items, state, acting_user=acting_user)  # the function's plain answer
    if items is None:
        return []
    if not isinstance(items, list | tuple) or not all(isinstance(item, dict) for item in items):
        raise StepError(f"inputs_from_state must return a list of dicts (one input per child), "
                        f"not {type(items).__name__}")
    limit = int(orchestrator_setting("MAX_CHILDREN_PER_STEP"))
    if len(items) > limit:
        raise StepError(f"inputs_from_state returned {len(items):,} items, and a step starts at most "
                        f"MAX_CHILDREN_PER_STEP={limit:,} child processes; split the items over several steps "
                        f"or parents, or raise the setting; no child was started")
    return [dict(item) for item in items]


def _start(locked: steplog.Locked, step: Step, items: dict[int, tuple[dict[str, Any], int]]) -> None:
    from processes.services import ChildOf, start_child  # services reaches the engine, which reaches here

    spec = step.children
    total = len(items)
    _lock_items_subscriptions(spec.workflow if not spec.is_parallel else None, items)
    for count, (index, (item, round_)) in enumerate(sorted(items.items()), start=1):
        if spec.is_parallel and index >= len(spec.branch_workflows):
            # A deploy took branches away while this one was aborted: there is no code to start it again with.
            raise StepError(f"cannot start branch {index + 1} again: the parallel step {step.name!r} has "
                            f"{len(spec.branch_workflows)} branch(es) now; abort the process and start a new one")
        name = spec.branch_workflows[index] if spec.is_parallel else spec.workflow
        try:
            child_spec = get_workflow(name)
            start_child(child_spec, parent=ChildOf(locked.process_id, locked.current_step, index, round_),
                        user_input=item, by=locked.acting_user)
        except Exception as exc:
            # Nothing of this step is kept (its transaction rolls back): no child of it exists.
            if isinstance(exc, DatabaseError) and connection_lost(exc):
                raise
            what = f"branch {index + 1}" if spec.is_parallel else f"item {index + 1}"
            raise StepError(f"cannot start the child for {what} ({count} of {total}, workflow "
                            f"{name}): {exc}; no child was started") from exc


def _lock_items_subscriptions(workflow: str | None, items: dict[int, tuple[dict[str, Any], int]]) -> None:
    """Lock every item's subscription (and neighbours) at once, in id order, before the first child starts:
    two parents fanning out over the same subscriptions then wait for each other instead of deadlocking
    (processes.startable.lock_many_with_neighbours). Each child's start locks its own again (held already)."""
    from processes.startable import SubscriptionBusy, lock_many_with_neighbours

    try:
        child_spec = get_workflow(workflow) if workflow else None
    except NotFound:
        return  # the first child's start says so, naming the item
    if child_spec is None or not child_spec.needs_subscription or child_spec.usable_while_out_of_sync:
        return
    try:
        lock_many_with_neighbours(item.get("subscription_id") for item, _ in items.values())
    except SubscriptionBusy as exc:
        raise StepError(f"cannot start the children ({len(items)}, workflow {workflow}): {exc}; "
                        f"no child was started") from exc


def _await(locked: steplog.Locked, step: Step, state: dict[str, Any], started: datetime, note: str) -> None:
    """The parent waits for its children, holding no worker: a snapshot row, its status, no run record."""
    process = get_process(locked.process_id)  # its row is already locked by this transaction
    now = timezone.now()
    if note:
        ProcessStep.objects.create(
            process=process, name=step.name, status=StepStatus.AWAITING_CHILDREN, state=state,
            delta=statelog.no_change(), error=storable_text(note, 2000), created_by=locked.acting_user,
            started_at=started, completed_at=now, attempt=process.current_attempt,
        )
    process.await_children()
    process.last_step = step.name
    process.last_modified_at = now
    process.save(update_fields=["status", "next_retry_at", "last_step", "last_modified_at"])
    if let_go_waiting(process):
        return None  # aborted as asked while the step ran: its children are aborted once this commits
    logger.info("process %s: %s; awaiting its children at %r", process.process_id, note or "waits again",
                step.name)
    return None


def _merge_and_go_on(locked: steplog.Locked, step: Step, state: dict[str, Any], since: statelog.Since,
                     started: datetime, lease: leases.Lease, children: list[dict[str, Any]]) -> Continue:
    spec = step.children
    if spec.is_parallel:
        new_state = _merge_branches(step, state, children)
    else:
        pick = spec.result or (lambda result: result)
        new_state = {**state, spec.result_key: [pick(child["result"] or {}) for child in children]}
    entry = statelog.entry(new_state, statelog.diff(state, new_state), since)
    steplog.advance(locked, step_name=step.name, step_status=StepStatus.SUCCESS, entry=entry, started=started,
                    finished=timezone.now(), lease=lease)
    return new_state, entry.since


_MISSING = object()


def _merge_branches(step: Step, state: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any]:
    """Every branch's changes to the state it started from, in branch order; two branches that set one key
    to different values are a failure of the step (which of them is right is the author's to say)."""
    changed: dict[str, tuple[int, Any]] = {}
    removed: set[str] = set()
    for child in children:
        branch = child["child_index"] + 1
        result = {k: v for k, v in (child["result"] or {}).items() if k not in ENGINE_KEYS}
        for key, value in result.items():
            if state.get(key, _MISSING) == value:
                continue
            if key in changed and changed[key][1] != value:
                raise StepError(f"branches {changed[key][0]} and {branch} both set {key!r}, to "
                                f"different values; let one branch own each key")
            changed[key] = (branch, value)
        removed |= {key for key in state if key not in ENGINE_KEYS and key not in result}
    new_state = {key: value for key, value in state.items() if key not in removed}
    new_state.update({key: value for key, (_, value) in changed.items()})
    return new_state


def latest_children(parent_id: uuid.UUID | str, step: int) -> list[dict[str, Any]]:
    """The children of the parent's step, one per item (its latest round), in item order."""
    rows = (Process.objects.filter(parent_id=parent_id, parent_step=step)
            .order_by("child_index", "child_round")
            .values("process_id", "child_index", "child_round", "status", "result", "failed_reason"))
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        latest[row["child_index"]] = row
    return list(latest.values())


def _input_of(child_id: uuid.UUID) -> dict[str, Any]:
    """The input an aborted child was started with, for its replacement."""
    initial = InputState.objects.filter(process_id=child_id, input_type=InputType.INITIAL).first()
    item = dict(initial.input) if initial is not None else {}
    subscription = Process.objects.filter(pk=child_id).values_list(
        "process_subscriptions__subscription_id", flat=True).first()
    if subscription is not None:
        item["subscription_id"] = str(subscription)
    return item


def _items_text(children: list[dict[str, Any]]) -> str:
    return ", ".join(str(child["child_index"] + 1) for child in children)


# --- a child's end ---------------------------------------------------------------------------------------
def child_completed(locked: steplog.Locked, state: dict[str, Any]) -> None:
    """A child's final step, in its transaction: keep its result for the parent, then join."""
    result = {key: value for key, value in state.items() if key not in ("workflow", "created_by")}
    Process.objects.filter(pk=locked.process_id).update(result=result)
    join(locked.parent_id, locked.parent_step)


def child_ended(process: Process) -> None:
    """A child that ended otherwise (aborted), in the transaction that ended it."""
    if process.parent_id is not None:
        join(process.parent_id, process.parent_step)


def join(parent_id: uuid.UUID | str | None, step: int | None) -> bool:
    """If no child of the parent's step is left unfinished, wake the parent (or, when a child was aborted,
    fail it saying which); True when it did. Needs the caller's transaction.

    Lock the parent's row first, then count: two last children ending at once queue here, and the second
    counts after the first committed, so exactly one of them acts.
    """
    if parent_id is None or step is None:
        return False
    parent = Process.objects.select_for_update(of=("self",)).filter(pk=parent_id).first()
    if parent is None or parent.status != P.AWAITING_CHILDREN or parent.current_step != step:
        return False
    if Process.objects.filter(parent_id=parent_id, parent_step=step).exclude(status__in=ENDED).exists():
        return False
    aborted = [child for child in latest_children(parent_id, step) if child["status"] == P.ABORTED]
    now = timezone.now()
    if aborted:
        _fail_for_aborted(parent, aborted, now)
        return True
    parent.resume()
    parent.run()
    parent.last_modified_at = now
    parent.save(update_fields=["status", "next_retry_at", "failed_reason", "traceback", "last_modified_at"])
    leases.queue(parent.process_id, fresh=True, now=now)
    submit_after_commit(parent.process_id)
    logger.info("process %s: its last child ended; it goes on", parent.process_id)
    return True


def _fail_for_aborted(parent: Process, aborted: list[dict[str, Any]], now: datetime) -> None:
    first = aborted[0]
    reason = storable_text(
        f"{len(aborted)} child process(es) aborted (item(s) {_items_text(aborted)}; item {first['child_index'] + 1}, "
        f"process {first['process_id']}: {first['failed_reason'] or 'aborted'}). Retry this process to start a "
        f"new child for each aborted item (the completed ones are kept), or skip this step to go on without "
        f"the children's results", 4000)
    name = parent.last_step or "Children"
    ProcessStep.objects.create(
        process=parent, name=name, status=StepStatus.FAILED, state=current_state(parent),
        delta=statelog.no_change(), error=reason, error_type="ChildAborted", created_by=parent.acting_user,
        started_at=now, completed_at=now, attempt=parent.current_attempt,
    )
    parent.children_aborted(f"{name}: {reason}")
    parent.current_attempt += 1
    parent.last_modified_at = now
    parent.save(update_fields=["status", "failed_reason", "traceback", "next_retry_at", "current_attempt",
                               "last_modified_at"])
    logger.warning("process %s: %s", parent.process_id, reason)


# --- abort, cascaded -------------------------------------------------------------------------------------
def after_abort(process: Process, who: str, reason: str) -> None:
    """In the transaction that aborted `process`: join its parent, and once committed, abort its unfinished
    children (each in a transaction of its own, so a parent's abort never waits on its children's locks)."""
    child_ended(process)
    if Process.objects.filter(parent_id=process.process_id).exclude(status__in=ENDED).exists():
        parent_id = process.process_id
        transaction.on_commit(lambda: abort_children(parent_id, who, reason), robust=True)


def abort_children(parent_id: uuid.UUID | str, who: str, reason: str = "") -> list[uuid.UUID]:
    """Abort every unfinished child of an aborted parent (a child in the middle of a step: at its end)."""
    from processes import operations  # operations reaches the engine, which reaches here

    why = f"its parent process {parent_id} was aborted" + (f" ({reason})" if reason else "")
    done = []
    for child_id in (Process.objects.filter(parent_id=parent_id).exclude(status__in=ENDED)
                     .order_by("parent_step", "child_index").values_list("process_id", flat=True)):
        try:
            operations.abort(child_id, by=who, reason=why)
            done.append(child_id)
        except WrongProcessStatus:
            continue  # it ended meanwhile
        except Exception:
            # The sweep aborts it later: one child that cannot be aborted now does not stop the others.
            logger.exception("process %s: could not abort it after its parent %s was aborted", child_id, parent_id)
    return done


# --- the sweep -------------------------------------------------------------------------------------------
def sweep(now: datetime | None = None, *, limit: int = 100) -> list[uuid.UUID]:
    """Joins that were missed and cascades that did not finish; return the processes acted on.

    - A parent still `awaiting_children` whose step has no unfinished child: woken (or failed, for an
      aborted child), under its row lock taken with SKIP LOCKED.
    - An unfinished child of an aborted parent: aborted.
    """
    if engine_paused():
        return []
    acted: list[uuid.UUID] = []
    unfinished = Process.objects.filter(parent_id=OuterRef("pk"), parent_step=OuterRef("current_step")).exclude(
        status__in=ENDED)
    stuck = list(Process.objects.filter(status=P.AWAITING_CHILDREN).exclude(Exists(unfinished))
                 .values_list("process_id", "current_step")[:limit])
    for parent_id, step in stuck:
        with transaction.atomic():
            free = Process.objects.select_for_update(skip_locked=True).filter(pk=parent_id).exists()
            if free and join(parent_id, step):
                acted.append(parent_id)
                logger.warning("process %s: its children had all ended but it still waited; woken by the sweep",
                               parent_id)
    orphans = (Process.objects.filter(parent__status=P.ABORTED).exclude(status__in=ENDED)
               .values_list("parent_id", flat=True).distinct()[:limit])
    for parent_id in list(orphans):
        who = Process.objects.filter(pk=parent_id).values_list("acting_user", flat=True).first() or "scheduler"
        acted += abort_children(parent_id, "scheduler", f"its abort by {who} reached it late")
    return acted


# --- read side -------------------------------------------------------------------------------------------
# Done first, then what needs a human, then what is still on its way: "46 completed, 1 failed, 1 running".
SUMMARY_ORDER = [P.COMPLETED, P.FAILED, P.WAITING, P.API_UNAVAILABLE, P.INCONSISTENT_DATA, P.SUSPENDED,
                 P.AWAITING_CALLBACK, P.AWAITING_CHILDREN, P.RUNNING, P.RESUMED, P.CREATED, P.ABORTED]


def summary_text(counts: dict[str, int]) -> str:
    """"46 completed, 1 failed, 1 running": the statuses in that fixed order, zeros left out."""
    order = [s.value for s in SUMMARY_ORDER]
    return ", ".join(f"{counts[s]} {P(s).label}" for s in sorted(counts, key=order.index) if counts[s])
