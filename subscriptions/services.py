"""Operations on subscriptions shared by the admin, the API, commands and workflow steps."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from orchestrator_site.errors import NotFound
from subscriptions.models import Subscription

logger = logging.getLogger(__name__)


def get_subscription(subscription_id: uuid.UUID | str, *, for_update: bool = False) -> Subscription:
    """The subscription with this id, optionally row-locked; NotFound (404) otherwise."""
    queryset = Subscription.objects.select_related("product")
    if for_update:
        # Lock only the subscription's own row (not the product it joins).
        queryset = queryset.select_for_update(of=("self",))
    try:
        return queryset.get(pk=subscription_id)
    except (Subscription.DoesNotExist, ValidationError, ValueError):
        raise NotFound(f"subscription {subscription_id} does not exist", subscription_id=subscription_id) from None


def change_lifecycle(
    subscription_id: uuid.UUID | str,
    target: str,
    *,
    by: Any = None,
    process_id: uuid.UUID | None = None,
) -> Subscription:
    """Move a subscription to `target` under a row lock, recording the transition.

    Lock first, then check the status: a concurrent change either finished before we read (and we
    see its status) or waits for us, so two changes never both act on the same old status.
    """
    with transaction.atomic():
        subscription = get_subscription(subscription_id, for_update=True)
        subscription.transition_to(target, by=by, process_id=process_id)
        subscription.save()
    return subscription
