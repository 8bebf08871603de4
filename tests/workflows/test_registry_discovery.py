"""The registry of workflows under concurrency: discovery finishes before anyone reads it, once, under a lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workflows import registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def undiscovered(monkeypatch):
    """The registry as a freshly started process has it before discovery: empty, not yet discovered."""
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_discovered", False)
    registry._REGISTRY.clear()
    yield saved
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_concurrent_first_lookups_wait_for_discovery_and_all_find_the_workflow(undiscovered, monkeypatch):
    calls: list[str] = []

    def slow_discovery(module_name: str) -> None:
        # Importing the apps' workflows modules takes a while; they register one by one.
        calls.append(module_name)
        for spec in undiscovered.values():
            registry._REGISTRY[spec.name] = spec
            time.sleep(0.005)

    monkeypatch.setattr(registry, "autodiscover_modules", slow_discovery)
    barrier = threading.Barrier(8)
    found: list[object] = []

    def first_request() -> None:
        barrier.wait(timeout=10)
        try:
            found.append(registry.get_workflow("modify_node").name)
        except Exception as exc:  # recorded and asserted below
            found.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert found == ["modify_node"] * 8
    assert calls == ["workflows"]  # discovered once, however many asked at once


def test_a_discovery_that_fails_is_not_marked_done_and_the_next_lookup_tries_again(undiscovered, monkeypatch):
    attempts: list[int] = []

    def flaky_discovery(module_name: str) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("myapp.workflows: cannot import name 'ipam'")
        registry._REGISTRY.update(undiscovered)

    monkeypatch.setattr(registry, "autodiscover_modules", flaky_discovery)

    with pytest.raises(ImportError, match="cannot import name"):
        registry.get_workflow("modify_node")
    assert registry.get_workflow("modify_node").name == "modify_node"
    assert len(attempts) == 2


CHECK = """
import threading, django
django.setup()
from workflows import registry
# Discovery happened during start-up, before any request could ask.
print("known at start-up:", len(registry._REGISTRY))
barrier, found = threading.Barrier(8), []
def ask():
    barrier.wait()
    try:
        found.append(registry.get_workflow("terminate_node").name)
    except Exception as exc:
        found.append(repr(exc))
threads = [threading.Thread(target=ask) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("found:", sorted(set(found)))
"""


@pytest.mark.parametrize("round_", range(3))
def test_a_freshly_started_process_knows_every_workflow_before_its_first_request(round_):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr[-3000:]
    known = int(result.stdout.split("known at start-up:")[1].split()[0])
    assert known >= 8, result.stdout  # the built-in and node workflows, at least
    assert "found: ['terminate_node']" in result.stdout, result.stdout
