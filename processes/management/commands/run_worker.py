"""manage.py run_worker: a Celery worker that runs processes (the same as `celery -A orchestrator_site worker`)."""

from __future__ import annotations

import os
from typing import Any

from processes.management.commands._base import OneLineCommand, WholeNumber

CONCURRENCY = WholeNumber(1, 1024)


class Command(OneLineCommand):
    help = (
        "Run a Celery worker for processes (ORCHESTRATOR EXECUTOR \"celery\"): it takes process ids from the "
        "broker (CELERY_BROKER_URL) and runs them against this machine's database (DATABASE_URL). Start as "
        "many as you like, on as many machines; a process is run by one of them at a time."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--concurrency", "-c", type=CONCURRENCY, default=os.cpu_count() or 1,
                            help="Processes run at once by this worker (default: the number of CPUs).")
        parser.add_argument("--queues", "-Q", default="celery",
                            help="Comma-separated queues to take work from (default: celery).")
        parser.add_argument("--pool", "-P", default="prefork", choices=["prefork", "threads", "solo"],
                            help="How the worker runs tasks (default: prefork, one OS process per slot).")
        parser.add_argument("--loglevel", "-l", default="INFO", help="Log level (default: INFO).")
        parser.add_argument("--hostname", "-n", default=None, help="The worker's node name (default: celery@host).")
        parser.add_argument("--include", "-I", default=None,
                            help="Comma-separated extra modules to import (e.g. modules defining workflows).")

    def handle(self, *args: Any, **options: Any) -> None:
        from orchestrator_site.celery import app

        argv = [
            "worker",
            f"--concurrency={CONCURRENCY.check('--concurrency', options['concurrency'])}",
            f"--queues={options['queues']}",
            f"--pool={options['pool']}",
            f"--loglevel={options['loglevel']}",
            # Gossip and mingle make every worker talk to every other at start-up and all the time; the
            # database is what coordinates processes, so they only cost broker traffic and start-up time.
            "--without-gossip",
            "--without-mingle",
        ]
        if options["hostname"]:
            argv.append(f"--hostname={options['hostname']}")
        if options["include"]:
            argv.append(f"--include={options['include']}")
        app.worker_main(argv=argv)
