"""The health check's parts: the database, the engine, the scheduler's last tick, and the broker (Celery executor).

Unavailable (503) when a part the service needs is down: the database always; the broker when the
executor is Celery (nothing can be started); the scheduler when it is required (SCHEDULER_REQUIRED) and
has not completed a tick lately. Fast: each part is one short read or one round trip with a short timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection

from orchestrator_site.conf import orchestrator_setting
from processes.engine_settings import engine_status
from processes.scheduler_ticks import scheduler_health, scheduler_required

logger = logging.getLogger(__name__)

OK, UNAVAILABLE, UNKNOWN, STALE, NOT_USED = "ok", "unavailable", "unknown", "stale", "not_used"


def check_database() -> None:
    """Ask the database a trivial question; raises DatabaseError when it cannot answer."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> str:
    """ok, unavailable, or not_used (the executor is not Celery)."""
    if str(orchestrator_setting("EXECUTOR")) != "celery":
        return NOT_USED
    from processes.executors.celery import broker_problem

    problem = broker_problem(float(orchestrator_setting("HEALTH_BROKER_TIMEOUT_SECONDS")))
    if problem is not None:
        logger.warning("health: %s", problem)
        return UNAVAILABLE
    return OK


@dataclass(frozen=True)
class Health:
    database: str
    engine: str
    scheduler: str
    scheduler_required: bool
    scheduler_last_tick_at: datetime | None
    broker: str

    @property
    def ok(self) -> bool:
        return (self.database == OK and self.broker != UNAVAILABLE
                and (self.scheduler == OK or not self.scheduler_required))

    def as_dict(self) -> dict[str, Any]:
        return {"status": OK if self.ok else UNAVAILABLE, "database": self.database, "engine": self.engine,
                "scheduler": self.scheduler, "scheduler_required": self.scheduler_required,
                "scheduler_last_tick_at": self.scheduler_last_tick_at, "broker": self.broker}


def health() -> Health:
    broker = check_broker()
    try:
        check_database()
        engine = engine_status().status
        scheduler = scheduler_health()
    except DatabaseError as exc:
        logger.warning("health: the database is unavailable: %s", exc)
        return Health(UNAVAILABLE, UNKNOWN, UNKNOWN, scheduler_required(), None, broker)
    if scheduler.state != OK and scheduler.required:
        logger.warning("health: the scheduler has not completed a tick since %s", scheduler.last_tick_at or "ever")
    return Health(OK, engine, scheduler.state, scheduler.required, scheduler.last_tick_at, broker)
