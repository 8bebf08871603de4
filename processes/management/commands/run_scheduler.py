"""`manage.py run_scheduler [--once] [--interval S]`: the engine's periodic work, in a process of its own."""

from __future__ import annotations

import time
from typing import Any

from processes.management.commands._base import ProcessCommand
from processes.scheduler import recover_stalled_processes, retry_due_processes


class Command(ProcessCommand):
    help = (
        "Retry waiting processes when their backoff is due and recover running processes whose run died "
        "(lease lapsed); loops every --interval seconds (or once)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Do one sweep and exit.")
        parser.add_argument("--interval", type=float, default=5.0, help="Seconds between sweeps (default 5).")

    def handle(self, *args: Any, once: bool, interval: float, **options: Any) -> None:
        while True:
            retried = retry_due_processes()
            recovered = recover_stalled_processes()
            if retried or recovered or once:
                self.stdout.write(
                    f"retried {len(retried)} waiting process(es), recovered {len(recovered)} stalled one(s)"
                )
            if once:
                return
            time.sleep(interval)
