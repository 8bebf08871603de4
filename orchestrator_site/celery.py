"""The Celery app: workers run processes from ids on the broker (`celery -A orchestrator_site worker`).

`celery -A orchestrator_site beat` is the scheduler for a Celery setup: it sends processes.scheduler_tick
(retries due, recovery of stalled runs, scheduled tasks; see processes/scheduler.py) to the workers every
ORCHESTRATOR["SWEEP_INTERVAL_SECONDS"]. Run one beat; a second one would only tick twice as often, which
is safe (every piece of a tick is done once) but wasteful.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")

app = Celery("orchestrator_site")
# Every Celery setting lives in Django's settings as CELERY_<NAME> (see settings.py, "Celery").
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """Workers log as the web processes do (settings.LOGGING: LOG_FORMAT, the process and step on each line)
    instead of through the handlers Celery would put on the root logger; at the worker's --loglevel."""
    import logging

    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def beat_schedule() -> dict[str, dict[str, object]]:
    from orchestrator_site.conf import orchestrator_setting

    interval = float(orchestrator_setting("SWEEP_INTERVAL_SECONDS"))
    return {
        "orchestrator-scheduler-tick": {
            "task": "processes.scheduler_tick",
            "schedule": interval,
            # A tick nobody picked up before the next one is due is dropped, not run late in a burst.
            "options": {"expires": interval},
        }
    }


app.conf.beat_schedule = beat_schedule()
