"""`manage.py bench_detail [--steps 500] [--payload 100] [--requests 5]`: the process detail of a long process.

Runs one process of the benchmark workflow (M steps, each adding `payload` bytes to the state) through
the inline engine, then requests its API detail and its admin page through Django's whole request stack
and prints the size of each answer and p50/p95 in milliseconds. The process is deleted at the end.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

from orchestrator_site.conf import orchestrator_setting
from processes.bench_workflow import declare_bench_workflow
from processes.management.commands._base import OneLineCommand, WholeNumber
from processes.management.commands.bench_reads import _time as time_page
from processes.management.commands.bench_reads import _uptime
from processes.models import Process, ProcessStatus, ProcessStep
from processes.services import start_process
from workflows.models import Workflow
from workflows.registry import unregister

logger = logging.getLogger(__name__)

STEPS = WholeNumber(1, 1_000)
PAYLOAD = WholeNumber(0, 100_000)
REQUESTS = WholeNumber(1, 1_000)
USER = "bench-detail"


class Command(OneLineCommand):
    help = "Time the API detail and the admin page of one process of M steps whose state grows with each step."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--steps", type=STEPS, default=500, help="Body steps of the process (default 500).")
        parser.add_argument("--payload", type=PAYLOAD, default=100,
                            help="Bytes each step adds to the state (default 100: 50 kB after 500 steps).")
        parser.add_argument("--requests", type=REQUESTS, default=5,
                            help="Timed requests per page (after one untimed; default 5).")

    def handle(self, *args: Any, steps: int = 500, payload: int = 100, requests: int = 5, **options: Any) -> None:
        steps, payload = STEPS.check("--steps", steps), PAYLOAD.check("--payload", payload)
        requests = REQUESTS.check("--requests", requests)
        if orchestrator_setting("EXECUTOR") != "inline":
            raise CommandError("bench_detail runs its process to the end in this process: it needs the 'inline' "
                               "executor (ORCHESTRATOR_EXECUTOR=inline)")
        spec = declare_bench_workflow(steps, payload)
        previous_disable = logging.root.manager.disable
        logging.disable(max(previous_disable, logging.INFO))
        process = None
        try:
            process = start_process(spec.name)
            if process.status != ProcessStatus.COMPLETED:
                raise CommandError(f"benchmark process ended {process.status}: {process.failed_reason}")
            user, _ = get_user_model().objects.get_or_create(username=USER, defaults={"is_staff": True,
                                                                                      "is_superuser": True})
            client = Client(HTTP_HOST="127.0.0.1")
            client.force_login(user)
            pages = [
                ("API detail", f"/api/processes/{process.pk}/"),
                ("admin page", reverse("admin:processes_process_change", args=[process.pk])),
            ]
            out = self.stdout
            rows = ProcessStep.objects.filter(process=process).count()
            out.write(f"process:   {steps} steps adding {payload:,} bytes each: {rows} log rows; uptime {_uptime()}")
            for label, url in pages:
                size, p50, p95 = _time(client, url, requests)
                out.write(f"{label + ':':<11}{size / 1024:>10,.1f} kB   p50 {p50:>8.1f} ms   p95 {p95:>8.1f} ms")
        finally:
            logging.disable(previous_disable)
            if process is not None:
                Process.objects.filter(pk=process.pk).delete()
            if not Process.objects.filter(workflow__name=spec.name).exists():
                Workflow.objects.filter(name=spec.name).delete()
            get_user_model().objects.filter(username=USER).delete()
            unregister(spec.name)


def _time(client: Client, url: str, requests: int) -> tuple[int, float, float]:
    """The answer's size in bytes, and p50 and p95 in ms (timed as bench_reads times its pages)."""
    with override_settings(DEBUG=False):
        size = len(client.get(url).content)
    p50, p95 = time_page(client, url, requests)
    return size, p50, p95
