"""`manage.py run_scheduler [--once] [--interval S]`: the engine's periodic work, in a process of its own."""

from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import close_old_connections

from orchestrator_site.conf import orchestrator_setting
from processes.management.commands._base import ProcessCommand, Seconds
from processes.scheduler import parse_schedule, tick

INTERVAL = Seconds(maximum=86_400.0)  # time.sleep() refuses negatives and nan; a day between sweeps is plenty


class Command(ProcessCommand):
    help = (
        "Retry waiting processes when their backoff is due, recover running processes whose run died "
        "(lease lapsed) and start the scheduled tasks (ORCHESTRATOR['SCHEDULE']) when due; loops every "
        "--interval seconds (or once). Any number of schedulers may run at once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Do one sweep and exit.")
        parser.add_argument(
            "--interval", type=INTERVAL, default=None,
            help="Seconds between sweeps (default ORCHESTRATOR['SWEEP_INTERVAL_SECONDS'], 10).",
        )

    def handle(self, *args: Any, once: bool, interval: float | None, **options: Any) -> None:
        if interval is None:
            interval = INTERVAL.check("ORCHESTRATOR['SWEEP_INTERVAL_SECONDS']",
                                      orchestrator_setting("SWEEP_INTERVAL_SECONDS"))
        interval = INTERVAL.check("--interval", interval)
        try:
            parse_schedule()  # a bad SCHEDULE stops the command here, with the setting named
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        while True:
            report = tick()
            if report.retried or report.recovered or report.started or report.failed or once:
                self.stdout.write(str(report))
            if once:
                if report.failed:
                    raise CommandError(f"the sweep failed in {', '.join(report.failed)} (logged above)")
                return
            close_old_connections()
            time.sleep(interval)
