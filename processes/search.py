"""Finding processes: the one search behind the process list's admin search box and `GET /api/processes/?search=`."""

from __future__ import annotations

import logging

from django.db.models import F, QuerySet

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
    digits, also finds that process or the processes on that subscription. Each word is `pk IN (UNION ALL
    of one subquery per place)`, which PostgreSQL answers from its indexes (see subscriptions.search).
    """
    by_process_id = id_filter(term, "process_id")
    by_subscription_id = id_filter(term, "subscription_id")
    for word in search_words(term)[:MAX_SEARCH_WORDS]:
        workflows = Workflow.objects.order_by().filter(ContainsIgnoringCase(F("name"), word))
        parts = [
            Process.objects.order_by().filter(workflow__in=workflows.values("pk")).values("pk"),
            ProcessSubscription.objects.order_by()
            .filter(subscription_id__in=subscriptions_with_word(word))
            .values("process_id"),
        ]
        # An id is a single word; so when the term is one, it is the only word (and may match as text too).
        if by_process_id is not None and by_subscription_id is not None:
            parts.append(Process.objects.order_by().filter(**by_process_id).values("pk"))
            parts.append(ProcessSubscription.objects.order_by().filter(**by_subscription_id).values("process_id"))
        queryset = queryset.filter(pk__in=parts[0].union(*parts[1:], all=True))
    return queryset
