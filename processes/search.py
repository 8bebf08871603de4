"""Finding processes: the one search behind the process list's admin search box and `GET /api/processes/?search=`."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import F, Q, QuerySet

from orchestrator_site.pagination import count_limit
from processes.models import Process, ProcessSubscription
from subscriptions.search import (
    MAX_SEARCH_WORDS,
    ContainsIgnoringCase,
    id_filter,
    search_words,
    subscriptions_with_word,
)
from workflows.models import Workflow

logger = logging.getLogger(__name__)


def search_processes(queryset: QuerySet[Process], term: str) -> QuerySet[Process]:
    """The processes of `queryset` that `term` finds; all of them for a blank term.

    Every word must be found (ignoring case, as a substring) in the workflow's name or in one of the
    process's subscriptions, as the subscription search finds them (description, customer id, resource
    values, product). A term that is a process id or a subscription id, whole or its first 8 or more hex
    digits, also finds that process or the processes on that subscription.

    The workflows a word names are looked up first (a small table), so the process query carries their
    ids, whose share of the processes PostgreSQL knows from its statistics. Then each word is one of two
    forms, chosen by a count that stops at LIST_COUNT_LIMIT:

    - few processes match (at most the limit): `pk IN (UNION ALL of one subquery per place)`, each part
      served by its own index (see subscriptions.search); the list sorts those few rows;
    - more: `workflow_id IN (...) OR pk IN (...)`, which the list's ordering index reads in order until a
      page is full. A word in every process's workflow name costs a page of rows, not a million.
    """
    by_process_id = id_filter(term, "process_id")
    by_subscription_id = id_filter(term, "subscription_id")
    for word in search_words(term)[:MAX_SEARCH_WORDS]:
        workflow_ids = list(
            Workflow.objects.order_by().filter(ContainsIgnoringCase(F("name"), word)).values_list("pk", flat=True)
        )
        in_workflows = Process.objects.order_by().filter(workflow_id__in=workflow_ids).values("pk")
        linked = ProcessSubscription.objects.order_by().filter(subscription_id__in=subscriptions_with_word(word))
        parts: list[QuerySet[Any]] = [linked.values("process_id")]
        if workflow_ids:
            parts.insert(0, in_workflows)
        # An id is a single word; so when the term is one, it is the only word (and may match as text too).
        if by_process_id is not None and by_subscription_id is not None:
            parts.append(Process.objects.order_by().filter(**by_process_id).values("pk"))
            parts.append(ProcessSubscription.objects.order_by().filter(**by_subscription_id).values("process_id"))
        union = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        if not workflow_ids or _at_most(union, count_limit()):
            queryset = queryset.filter(pk__in=union)
            continue
        found = Q(workflow_id__in=workflow_ids) | Q(pk__in=linked.values("process_id"))
        if by_process_id is not None and by_subscription_id is not None:
            found |= Q(**by_process_id) | Q(pk__in=ProcessSubscription.objects.order_by().filter(
                **by_subscription_id).values("process_id"))
        queryset = queryset.filter(found)
    return queryset


def _at_most(union: QuerySet[Any], limit: int) -> bool:
    """Whether the parts of a word find at most `limit` rows (counted no further than limit + 1)."""
    return union.order_by()[: limit + 1].count() <= limit
