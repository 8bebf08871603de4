"""Celery tasks: the message carries only a process id; the database holds everything else."""

from __future__ import annotations

from orchestrator_site.celery import app
from processes.dberrors import keep_healthy_connection
from processes.engine import run_process


# acks_late + reject_on_worker_lost: the message is acknowledged only once the run returns, so a worker
# killed mid-run leaves it on the broker for another worker. Running it again is safe: the engine locks
# the process row and checks its position before each step, so no step runs twice.
@app.task(name="processes.run_process", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_process_task(process_id: str) -> None:
    # The worker keeps its connection from task to task (CELERY_DB_REUSE_MAX): check it before use.
    keep_healthy_connection()
    run_process(process_id)


# Sent by Celery beat every SWEEP_INTERVAL_SECONDS (orchestrator_site/celery.py). Not acks_late: a tick
# lost with its worker is simply done by the next one; expires: ticks queued up while no worker listened
# are dropped rather than run in a burst.
@app.task(name="processes.scheduler_tick", ignore_result=True)
def scheduler_tick_task() -> str:
    from processes.scheduler import tick

    return str(tick())
