"""A worker killed in the middle of a step: the log shows the last successful step; retry completes once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from orchestrator_site.database_url import postgres_url
from processes.engine import current_state
from processes.errors import AlreadyRunning, ProcessBusy
from processes.models import Process, ProcessStep
from processes.services import retry_process, start_process
from tests.processes.conftest import effects, log

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import django, sys
django.setup()
import tests.processes.flows  # the test workflows
from processes.engine import run_process
run_process(sys.argv[1])
"""


def kill_when_inside(worker: subprocess.Popen, marker: Path, what: str, timeout: float = 30) -> None:
    """Wait until the worker writes `marker` (it is at the point to kill it), then SIGKILL it."""
    try:
        deadline = time.monotonic() + timeout
        while not (marker.exists() and marker.read_text()):
            assert worker.poll() is None, worker.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"the worker never reached {what}"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()


def database_url() -> str:
    """This test database's URL for a worker subprocess (over TCP, or a Unix socket: the embedded server)."""
    return postgres_url(connection.settings_dict)


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_step_leaves_the_last_successful_state_and_retry_completes_once(settings, tmp_path):
    # Start the process without running it here: a separate worker process will run it.
    lease = 2.0  # short, so the test need not wait long for the dead worker's lease to lapse
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": lease}
    process = start_process("t_killable", by="alice")
    pid = str(process.process_id)
    hang = tmp_path / f"{pid}.hang"
    inside = tmp_path / f"{pid}.inside"
    hang.touch()
    env = {**os.environ, "DATABASE_URL": database_url(), "ENGINE_TEST_DIR": str(tmp_path),
           "ORCHESTRATOR_LEASE_SECONDS": str(lease), "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, pid], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Killed inside "Write, then hang": its write is done but not committed.
    kill_when_inside(worker, inside, "the step")

    process = Process.objects.get(pk=pid)
    assert process.status == "running"  # nobody finished it: its worker died
    assert log(process)[-1] == ("Write A", "success")
    assert current_state(process)["a_written"] is True and "hung" not in current_state(process)
    assert effects(f"hang-{pid}") == []  # the killed step's write was rolled back

    hang.unlink()
    settings.ORCHESTRATOR = {"LEASE_SECONDS": lease}  # the retry runs here, inline
    refusals: list[str] = []
    deadline = time.monotonic() + 15
    while True:
        try:
            # The dead worker's row lock goes when the server notices the closed connection; its lease
            # lapses after `lease` seconds: until then it might be a live run between two steps.
            retried = retry_process(pid, by="bob")
            break
        except (ProcessBusy, AlreadyRunning) as refused:
            refusals.append(str(refused))
            assert time.monotonic() < deadline, f"the dead worker's run never let go: {refusals[-1]}"
            time.sleep(0.2)
    assert any("it is already running" in text and "recovered by itself when its lease lapses" in text
               for text in refusals), refusals

    assert retried.status == "completed"
    names = [name for name, _ in log(retried)]
    assert names == ["Start", "Write A", "Write, then hang while the hang file exists", "Write C", "Done"]
    assert effects(f"a-{pid}") == [f"a-{pid}"]
    assert effects(f"hang-{pid}") == [f"hang-{pid}"]
    assert effects(f"c-{pid}") == [f"c-{pid}"]
    assert ProcessStep.objects.filter(process=retried, status="failed").count() == 0
