"""Idempotency keys: a client that repeats a start with the same key and body gets the same process."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction

from orchestrator_site.errors import InvalidInput, OrchestratorError
from processes import engine
from processes.models import IdempotencyKey, Process

logger = logging.getLogger(__name__)

# How long a key is kept at the least: task_clean_up_tasks (processes/system_tasks.py) deletes keys older
# than ORCHESTRATOR["IDEMPOTENCY_KEY_RETENTION_HOURS"] but never younger than this, so a client may repeat
# a request for a day.
IDEMPOTENCY_KEY_KEEP = timedelta(hours=24)
MAX_KEY_LENGTH = IdempotencyKey._meta.get_field("key").max_length or 255
HEADER = "Idempotency-Key"


class IdempotencyKeyReused(OrchestratorError):
    status_code = 422
    default_detail = "This Idempotency-Key was already used with a different request."


@dataclass(frozen=True)
class Outcome:
    process: Process
    # False when the key had been seen: the process is the one the first request started.
    created: bool


def body_hash(body: Any) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no spaces): equal data gives an equal hash."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        message = f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. a UUID"
        raise InvalidInput(f"invalid {HEADER} header: it {message}", errors={HEADER: [message]})


def start_once(user: Any, key: str, body: Any, start: Callable[[], Process]) -> Outcome:
    """Call `start` once per (user, key): a repeat with the same body returns the first call's process.

    The key row is inserted in the same transaction as the process, before it, so a concurrent repeat
    waits on the unique (user, key) index until the first commits and then finds its row (PostgreSQL);
    on SQLite the immediate transactions serialise the two outright. A start that fails leaves no key
    behind: the client may repeat it with the same key. The executor runs the process after the commit.
    """
    check_key(key)
    digest = body_hash(body)
    found = _find(user, key, digest)
    if found is not None:
        return Outcome(found, created=False)
    try:
        with transaction.atomic():
            row = IdempotencyKey.objects.create(user=user, key=key, body_hash=digest)
            process = start()
            row.process = process
            row.save(update_fields=["process"])
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its process.
        found = _find(user, key, digest)
        if found is None:
            raise
        return Outcome(found, created=False)
    logger.info("process %s: started for %s with idempotency key %r", process.process_id, user, key)
    # The process ran (inline executor) or was queued when the transaction committed: read its status now.
    return Outcome(engine.get_process(process.process_id), created=True)


def _find(user: Any, key: str, digest: str) -> Process | None:
    row = IdempotencyKey.objects.filter(user=user, key=key).select_related("process__workflow").first()
    if row is None or row.process is None:
        return None
    if row.body_hash != digest:
        raise IdempotencyKeyReused(
            f"{HEADER} {key!r} was already used with a different request body (it started process "
            f"{row.process_id}); use a new key for a new request"
        )
    return row.process
