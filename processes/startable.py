"""Whether a workflow may start on a subscription now, and if not why: one answer for start, admin and API.

A start is refused when the workflow does not serve the product or the lifecycle status, when a
terminate would leave subscriptions using this one, when this subscription *or a neighbour* (one it
uses, or one that uses it) is held by another process, when a run predicate says no, or when the
workflow's authorize hook refuses the user.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.db import DatabaseError, connection

from orchestrator_site.errors import Conflict
from processes.dberrors import deadlocked, lock_timed_out
from processes.leases import lock_wait
from processes.models import FINISHED, Process, ProcessSubscription
from subscriptions.lifecycle import SubscriptionLifecycle
from subscriptions.models import Subscription
from subscriptions.relations import Neighbour, Relation, depends_on, in_use_by, refusals_for_status
from workflows.models import Target
from workflows.registry import WorkflowSpec, all_workflows

logger = logging.getLogger(__name__)


class SubscriptionBusy(Conflict):
    """A start could not lock the subscription and its neighbours in time: a step is changing one of them."""

    default_detail = "The subscription or one related to it is being changed right now; try again in a moment."


@dataclass(frozen=True)
class Holder:
    process_id: uuid.UUID
    workflow: str
    status: str

    def describe(self) -> str:
        return f"process {self.process_id} ({self.workflow}, {self.status})"


class Refusal(str):
    """One reason a workflow cannot start: its message (it is a str), HTTP status and what it names.

    A str, so the lists of reasons the admin and API show stay lists of messages; the structured parts
    (`locked_relations`, `in_use_by`) are there for those who want them.
    """

    status: int
    locked_relations: tuple[dict[str, Any], ...]
    in_use_by: tuple[dict[str, Any], ...]

    def __new__(cls, status: int, message: str, *, locked_relations: tuple[dict[str, Any], ...] = (),
                in_use_by: tuple[dict[str, Any], ...] = ()) -> Refusal:
        refusal = super().__new__(cls, message)
        refusal.status = status
        refusal.locked_relations = locked_relations
        refusal.in_use_by = in_use_by
        return refusal


def holds(holder: Holder, workflows: dict[str, WorkflowSpec] | None = None) -> bool:
    """Whether an unfinished process keeps others off its subscription: all do, except those of workflows
    declared usable while out of sync (read-only ones, which never take the subscription). A process whose
    workflow left the code is counted as holding: nobody can say what it would still do."""
    spec = (workflows if workflows is not None else all_workflows()).get(holder.workflow)
    return spec is None or not spec.usable_while_out_of_sync


def _holders_of(subscription_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Holder]]:
    """Unfinished processes linked to each subscription, newest first (one query)."""
    out: dict[uuid.UUID, list[Holder]] = {pk: [] for pk in subscription_ids}
    rows = (
        ProcessSubscription.objects.filter(subscription_id__in=subscription_ids)
        .exclude(process__status__in=FINISHED)
        .order_by("-process__started_at", "process_id")
        .values_list("subscription_id", "process_id", "process__workflow__name", "process__status")
    )
    for subscription_id, *holder in rows:
        out[subscription_id].append(Holder(*holder))
    return out


def holding_processes(subscription: Subscription) -> list[Holder]:
    """Unfinished processes linked to the subscription, newest first: who holds it out of sync."""
    return _holders_of([subscription.pk])[subscription.pk]


def holding_processes_of(subscription_id: uuid.UUID | str) -> list[Holder]:
    """holding_processes, by the subscription's id (nothing read to find the subscription itself)."""
    pk = subscription_id if isinstance(subscription_id, uuid.UUID) else uuid.UUID(str(subscription_id))
    return _holders_of([pk])[pk]


class Surroundings:
    """What the checks need to know about one subscription, read once and only when a check asks for it
    (a read-only workflow's start needs none of it), in a constant number of queries."""

    def __init__(self, subscription: Subscription, family: frozenset[uuid.UUID] = frozenset()) -> None:
        self.subscription = subscription
        self.workflows = all_workflows()
        # A child process's ancestors (processes.joins): what they hold does not keep their child off its
        # neighbours (a node's migration fans out to its ports while it holds the node).
        self.family = family

    @classmethod
    def of(cls, subscription: Subscription, family: frozenset[uuid.UUID] = frozenset()) -> Surroundings:
        return cls(subscription, family)

    @cached_property
    def users(self) -> list[Relation]:
        return in_use_by([self.subscription.pk])[self.subscription.pk]

    @cached_property
    def uses(self) -> list[Relation]:
        return depends_on([self.subscription.pk])[self.subscription.pk]

    @cached_property
    def holders(self) -> dict[uuid.UUID, list[Holder]]:
        return _holders_of([self.subscription.pk, *{r.other.subscription_id for r in (*self.users, *self.uses)}])

    def own_holders(self) -> list[Holder]:
        return [h for h in self.holders[self.subscription.pk] if holds(h, self.workflows)]

    def neighbours(self) -> list[Neighbour]:
        found = {r.other.subscription_id: r.other for r in (*self.uses, *self.users)}
        return [found[i] for i in sorted(found, key=str)]

    def locked_relations(self) -> list[dict[str, Any]]:
        """Neighbours another process holds, or that are out of sync: a workflow here must wait for them."""
        locked = []
        for neighbour in self.neighbours():
            held = [h for h in self.holders.get(neighbour.subscription_id, []) if holds(h, self.workflows)]
            holders = [h for h in held if h.process_id not in self.family]
            if holders or (not neighbour.insync and len(held) == len(holders)):
                locked.append({
                    **neighbour.as_dict(),
                    "held_by": str(holders[0].process_id) if holders else None,
                    "held_by_workflow": holders[0].workflow if holders else None,
                })
        return locked


def _describe_locked(item: dict[str, Any]) -> str:
    what = f"{item['product']} {item['subscription_id']} ({item['description']})"
    if item["held_by"]:
        return f"{what} is held by process {item['held_by']} ({item['held_by_workflow']})"
    return f"{what} is out of sync (no process holds it; staff can set it in sync)"


def reasons_not_startable(spec: WorkflowSpec, subscription: Subscription, *, user: Any = None,
                          around: Surroundings | None = None,
                          family: frozenset[uuid.UUID] = frozenset()) -> list[Refusal]:
    """Why `spec` cannot start on `subscription` now; empty when it can.

    With `user`, the workflow's own authorize hook is asked too (403), so nothing is offered that a start
    would then refuse. `around` is the subscription's Surroundings, when the caller has read them already.
    `family`: the ancestors of the child process being started, whose holds on neighbours do not count.
    """
    around = around or Surroundings.of(subscription, family)
    reasons: list[Refusal] = []
    product = subscription.product
    if spec.product_types and product.product_type not in spec.product_types:
        reasons.append(Refusal(412, f"{spec.name} does not serve product {product.name} ({product.product_type})"))
    if spec.allowed_statuses and subscription.status not in spec.allowed_statuses:
        reasons.append(Refusal(412, f"subscription {subscription.subscription_id} is {subscription.status}; "
                                    f"{spec.name} may start only on {', '.join(spec.allowed_statuses)} subscriptions"))
    if spec.target == Target.TERMINATE and subscription.status != SubscriptionLifecycle.TERMINATED:
        problems = refusals_for_status(subscription, SubscriptionLifecycle.TERMINATED, users=around.users, uses=[])
        if problems:
            users = tuple(r.other.as_dict() for r in around.users
                          if r.other.status != SubscriptionLifecycle.TERMINATED)
            reasons.append(Refusal(
                412, f"subscription {subscription.subscription_id} is in use: {'; '.join(problems)}; "
                     f"terminate those first", in_use_by=users,
            ))
    if not spec.usable_while_out_of_sync:
        reasons.extend(_sync_refusals(spec, subscription, around))
    reasons.extend(predicate_refusals(spec, subscription))
    if user is not None and not allowed(spec, user, subscription):
        reasons.append(Refusal(403, f"you may not start {spec.name}"))
    return reasons


def _sync_refusals(spec: WorkflowSpec, subscription: Subscription, around: Surroundings) -> list[Refusal]:
    reasons = []
    holders = around.own_holders()
    if not subscription.insync:
        if holders:
            reasons.append(Refusal(409, f"subscription {subscription.subscription_id} is out of sync "
                                        f"({holders[0].describe()} is running on it)"))
        elif not spec.reconciles:
            reasons.append(Refusal(409, f"subscription {subscription.subscription_id} is out of sync (no "
                                        f"unfinished process holds it; staff can set it in sync, or run a "
                                        f"reconcile workflow)"))
    elif holders:
        # Started, not yet at its unsync step: it holds the subscription all the same.
        reasons.append(Refusal(409, f"subscription {subscription.subscription_id} is held by "
                                    f"{holders[0].describe()}, which has not finished"))
    locked = around.locked_relations()
    if locked:
        reasons.append(Refusal(
            409, f"subscription {subscription.subscription_id} has related subscriptions in use: "
                 + "; ".join(_describe_locked(item) for item in locked),
            locked_relations=tuple(locked),
        ))
    return reasons


# --- run predicates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartContext:
    """What a run predicate is given: the workflow, the subscription (None for a task), and questions."""

    spec: WorkflowSpec
    subscription: Subscription | None

    def unfinished_processes(self) -> list[tuple[uuid.UUID, str]]:
        """(id, status) of this workflow's unfinished processes (on this subscription, if it has one)."""
        rows = Process.objects.filter(workflow__name=self.spec.name).exclude(status__in=FINISHED)
        if self.subscription is not None:
            rows = rows.filter(process_subscriptions__subscription=self.subscription)
        return list(rows.order_by("started_at").values_list("process_id", "status")[:5])


def predicate_refusals(spec: WorkflowSpec, subscription: Subscription | None) -> list[Refusal]:
    """Run the workflow's start predicates; each one that says no is a 412 with its message."""
    reasons = []
    context = StartContext(spec, subscription)
    for predicate in spec.run_predicates:
        try:
            verdict = predicate(context)
        except DatabaseError:
            raise  # the transaction is broken: no further check could run, and the caller must know
        except Exception as exc:
            # A predicate with a bug refuses the start, saying so, rather than answering a bare 500.
            logger.exception("start predicate %s of %s raised", getattr(predicate, "__name__", predicate), spec.name)
            reasons.append(Refusal(412, f"the start condition {getattr(predicate, '__name__', predicate)} of "
                                        f"{spec.name} could not be checked: {type(exc).__name__}: {exc}"))
            continue
        if verdict is None or verdict is True:
            continue
        message = verdict if isinstance(verdict, str) and verdict else (
            getattr(predicate, "message", None) or f"the start condition {predicate.__name__} of {spec.name} "
                                                   f"does not hold")
        reasons.append(Refusal(412, message))
    return reasons


# --- authorization --------------------------------------------------------------------------------
def allowed(spec: WorkflowSpec, user: Any, subscription: Subscription | None) -> bool:
    # Only a real user is asked about; a name (commands, the scheduler) acts with the system's authority.
    if spec.authorize is None or user is None or isinstance(user, str):
        return True
    return bool(spec.authorize(user, spec, subscription))


def workflows_for(subscription: Subscription, *, user: Any = None) -> list[tuple[WorkflowSpec, list[Refusal]]]:
    """Every workflow for the subscription's product, with the reasons it cannot start now (none: allowed);
    with `user`, including that the workflow's authorize hook refuses them. Relations and holders are read
    once for all of them."""
    around = Surroundings.of(subscription)
    out = []
    for spec in around.workflows.values():
        if not spec.needs_subscription and not spec.usable_while_out_of_sync:
            continue
        if spec.product_types and subscription.product.product_type not in spec.product_types:
            continue
        out.append((spec, reasons_not_startable(spec, subscription, user=user, around=around)))
    return out


def lock_with_neighbours(subscription_id: uuid.UUID | str) -> None:
    """Row-lock the subscription and every neighbour, in id order, for the rest of the transaction.

    A start on a port and one on its node, at the same moment: both lock {node, port} in the same order,
    so the second waits for the first to commit its process link, then sees it and is refused. One
    statement in id order, so two such locks never deadlock. The neighbours are read before the lock;
    a relation made at that very moment is not locked (the unsync step still checks the subscription).
    """
    from subscriptions.services import get_subscription

    subscription = get_subscription(subscription_id)  # NotFound first, for a clear 404
    _lock_in_id_order(_with_neighbours({subscription.pk}), (
        f"subscription {subscription.subscription_id} or a subscription related to it is being changed by "
        f"a running step right now; try again in a moment"), subscription_id=subscription.subscription_id)


def lock_many_with_neighbours(subscription_ids: Iterable[uuid.UUID | str | None]) -> None:
    """Row-lock many subscriptions and all their neighbours in one statement, in id order: a children step
    about to start one child per subscription (processes.joins).

    Locked child by child, two such steps over the same subscriptions in different orders would each hold
    what the other wants next: a deadlock, which PostgreSQL breaks by failing one of them with a "busy" that
    names no one. Locked at once, the second waits for the first to commit, then finds the first's children
    holding them and says so. Values that name no subscription are left to each child's own start (its
    form and its 404 say what is wrong with them).
    """
    keys: set[uuid.UUID] = set()
    for value in subscription_ids:
        try:
            keys.add(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            continue
    if keys:
        _lock_in_id_order(_with_neighbours(keys), (
            f"one of the {len(keys)} subscriptions of these items, or a subscription related to one of them, is "
            f"being changed by a running step right now; try again in a moment"))


def _with_neighbours(keys: set[uuid.UUID]) -> set[uuid.UUID]:
    """The subscriptions and every one they use or are used by (read before the lock, in a few queries)."""
    ids = set(keys)
    for relations in (in_use_by(keys), depends_on(keys)):
        for found in relations.values():
            ids.update(relation.other.subscription_id for relation in found)
    return ids


def _lock_in_id_order(ids: set[uuid.UUID], busy: str, **context: Any) -> None:
    if not connection.features.has_select_for_update:
        return  # SQLite: one writer at a time already
    try:
        # Bounded: a step changing a neighbour's status holds its row (and may want ours: a deadlock
        # PostgreSQL breaks by failing one side). Either way the start answers 409 "busy", never a 500.
        with lock_wait():
            list(Subscription.objects.filter(pk__in=ids).order_by("pk").select_for_update().values_list("pk"))
    except DatabaseError as exc:
        if not (lock_timed_out(exc) or deadlocked(exc)):
            raise
        raise SubscriptionBusy(busy, **context) from exc
