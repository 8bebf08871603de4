"""A worker killed around a callback step loses nothing: while the process awaits, no worker holds it; killed
inside the action, the action's token and writes never existed and the process is recovered."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from processes.callbacks import deliver
from processes.models import CallbackToken, Process, ProcessLease
from processes.recovery import recover_stalled_processes
from processes.scheduler import tick
from processes.services import start_process
from tests.processes.conftest import effects, log
from tests.processes.test_engine_crash import ROOT, database_url, kill_when_inside

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

# Runs the process to where it stops, then stays alive as a long-lived worker would, until killed.
WORKER = """
import django, sys, time
django.setup()
import tests.processes.wait_flows  # the test workflows
from processes.engine import run_process
run_process(sys.argv[1])
print("stopped", flush=True)
time.sleep(600)
"""
GOOD = {"ok": True, "device": "rtr-1"}


def worker(pid: str, tmp_path, lease: float) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url(), "ENGINE_TEST_DIR": str(tmp_path),
           "ORCHESTRATOR_LEASE_SECONDS": str(lease), "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    return subprocess.Popen([sys.executable, "-c", WORKER, pid], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_a_worker_killed_while_the_process_awaits_its_callback_loses_nothing(settings, tmp_path, fake_system):
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor"}
    pid = str(start_process("t_callback", by="alice").process_id)
    ready = tmp_path / "stopped"
    proc = worker(pid, tmp_path, lease=2.0)
    try:
        deadline = time.monotonic() + 60
        while Process.objects.get(pk=pid).status != "awaiting_callback":
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the worker never reached the callback step"
            time.sleep(0.05)
        ready.write_text("now")
        kill_when_inside(proc, ready, "the wait")  # the worker is alive and idle: kill -9 it
    finally:
        if proc.poll() is None:
            proc.kill()

    process = Process.objects.get(pk=pid)
    assert process.status == "awaiting_callback"
    assert not ProcessLease.objects.filter(process=process).exists()  # nothing for the sweep to recover
    assert recover_stalled_processes() == []
    assert CallbackToken.objects.get(process=process).is_open

    settings.ORCHESTRATOR = {}  # the answer is taken here, and the rest runs inline
    deliver(pid, None, GOOD, by="ops", reason="the answer the external system sent")

    process.refresh_from_db()
    assert process.status == "completed"
    assert len(effects(f"deploy-{pid}")) == 1  # the action ran once
    assert effects(f"c-{pid}") == [f"c-{pid}"]


def test_a_worker_killed_inside_the_action_leaves_no_token_and_the_recovered_run_asks_once(settings, tmp_path,
                                                                                          fake_system):
    lease = 2.0
    settings.ORCHESTRATOR = {"EXECUTOR": "tests.processes.flows.DeferredExecutor", "LEASE_SECONDS": lease}
    pid = str(start_process("t_callback").process_id)
    hang = tmp_path / f"deploy-{pid}.hang"
    hang.touch()
    proc = worker(pid, tmp_path, lease)
    kill_when_inside(proc, tmp_path / f"deploy-{pid}.inside", "the action")
    hang.unlink()

    process = Process.objects.get(pk=pid)
    assert process.status == "running"
    assert CallbackToken.objects.filter(process=process).count() == 0  # rolled back with the action
    assert effects(f"deploy-{pid}") == []

    # The sweep hands the dead run's process over once its lease lapsed; here the executor is inline.
    settings.ORCHESTRATOR = {"LEASE_SECONDS": lease}
    deadline = time.monotonic() + 30
    while Process.objects.get(pk=pid).status == "running":
        assert time.monotonic() < deadline, "the sweep never recovered the process"
        tick()
        time.sleep(0.2)

    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    assert CallbackToken.objects.filter(process=process).count() == 1
    assert len(effects(f"deploy-{pid}")) == 1
    assert [s for n, s in log(process) if n == "Deploy config"] == ["awaiting_callback"]
