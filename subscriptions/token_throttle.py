"""The API's throttle on bad tokens: an address that sent too many is refused for a while (429, Retry-After)."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.humanize import exact_time
from subscriptions.access_models import BadTokenAttempts

logger = logging.getLogger(__name__)

# Rows whose window ended at least this long ago are deleted (as failures come in): the table holds the
# addresses seen lately, not every address that ever sent a bad token.
FORGET_AFTER = timedelta(days=1)


def _window() -> timedelta:
    return timedelta(seconds=float(orchestrator_setting("API_BAD_TOKEN_WINDOW_SECONDS")))


def blocked_rows(address: str, now: datetime) -> QuerySet[BadTokenAttempts]:
    """The address's row while it is refused (none otherwise)."""
    return BadTokenAttempts.objects.filter(address=address, blocked_until__gt=now)


def seconds_blocked(address: str) -> int:
    """How many more seconds the address is refused (at least 1), or 0 when it is not."""
    now = timezone.now()
    until = blocked_rows(address, now).values_list("blocked_until", flat=True).first()
    if until is None:
        return 0
    return max(1, math.ceil((until - now).total_seconds()))


def record_bad_token(address: str) -> int:
    """Count a request with a bad token from the address; return the seconds it is now refused (0: not yet)."""
    limit = int(orchestrator_setting("API_BAD_TOKEN_LIMIT"))
    window = _window()
    now = timezone.now()
    # The row's lock makes two processes counting failures of one address at once count both: each reads
    # the count the other wrote. get_or_create inside the transaction handles a row created meanwhile.
    with transaction.atomic():
        row, created = BadTokenAttempts.objects.select_for_update().get_or_create(
            address=address, defaults={"failures": 1, "window_started": now})
        if not created:
            window_over = row.window_started + window <= now
            block_over = row.blocked_until is not None and row.blocked_until <= now
            if window_over or block_over:  # a new window begins with this failure
                row.failures, row.window_started, row.blocked_until = 1, now, None
            else:
                row.failures += 1
        if limit > 0 and row.failures >= limit and row.blocked_until is None:
            row.blocked_until = now + window
            logger.warning("API: %s sent %d bad tokens since %s; refusing its tokens until %s", address,
                           row.failures, exact_time(row.window_started), exact_time(row.blocked_until))
        row.save()
    forget_old(now)
    if row.blocked_until is None:
        return 0
    return max(1, math.ceil((row.blocked_until - now).total_seconds()))


def forget_old(now: datetime | None = None) -> int:
    """Delete the rows of addresses whose window and block ended FORGET_AFTER ago; return how many."""
    horizon = (now or timezone.now()) - FORGET_AFTER - _window()
    deleted, _ = BadTokenAttempts.objects.filter(
        Q(blocked_until__isnull=True) | Q(blocked_until__lt=horizon), window_started__lt=horizon,
    ).delete()
    return deleted


def unblock(address: str | None = None) -> int:
    """Forget the bad tokens of one address (None: of every address), lifting its block; return how many rows."""
    rows = BadTokenAttempts.objects.all() if address is None else BadTokenAttempts.objects.filter(address=address)
    deleted, _ = rows.delete()
    logger.info("API: bad-token count of %s forgotten (%d address(es))", address or "every address", deleted)
    return deleted
