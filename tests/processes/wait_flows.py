"""Workflows that wait: callback steps answered by a fake external system on demand, and timers."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.processes.flows import effect, write_a, write_c
from workflows.dsl import State, StepList, begin, callback_step, conditional, sleep, step, wait_until
from workflows.registry import workflow


class FakeSystem:
    """The external system: remembers what each action asked of it (URL, token), answers when a test says."""

    asked: list[dict[str, Any]] = []

    @classmethod
    def reset(cls) -> None:
        cls.asked.clear()

    @classmethod
    def last(cls, what: str | None = None) -> dict[str, Any]:
        matching = [a for a in cls.asked if what is None or a["what"] == what]
        assert matching, f"the external system was never asked for {what or 'anything'}"
        return matching[-1]

    @staticmethod
    def path(url: str) -> str:
        """The callback URL without its scheme and host (for the test client)."""
        return "/" + url.split("://", 1)[1].split("/", 1)[1]


def hang_while_told(name: str) -> None:
    """In a crash test's worker (ENGINE_TEST_DIR set): say "inside" and hang while the test's hang file exists."""
    folder = os.environ.get("ENGINE_TEST_DIR")
    if not folder:
        return
    hang, inside = Path(folder, f"{name}.hang"), Path(folder, f"{name}.inside")
    if hang.exists():
        inside.write_text("inside")
        while hang.exists():
            time.sleep(0.05)


def deploy(process_id: str, callback_url: str, callback_token: str, callback_progress_url: str) -> State:
    # Committed with the step: counts how often the action ran (and stays uncounted if it rolled back).
    effect(f"deploy-{process_id}-{len(FakeSystem.asked)}-{os.getpid()}")
    hang_while_told(f"deploy-{process_id}")
    FakeSystem.asked.append({"what": "deploy", "process_id": process_id, "url": callback_url,
                             "token": callback_token, "progress_url": callback_progress_url})
    return {"deploy_requested": True}


def check_deploy(deploy_result: Any) -> State:
    if not isinstance(deploy_result, dict) or deploy_result.get("ok") is not True:
        reason = deploy_result.get("error", "no reason") if isinstance(deploy_result, dict) else deploy_result
        raise RuntimeError(f"the device refused the configuration: {reason}")
    return {"deployed_on": deploy_result["device"]}


def verify(process_id: str, callback_url: str) -> State:
    FakeSystem.asked.append({"what": "verify", "process_id": process_id, "url": callback_url})
    return {"verify_requested": True}


deploy_config = callback_step("Deploy config", action=deploy, validate=check_deploy, timeout=timedelta(minutes=10),
                              result_key="deploy_result")


@workflow("Engine test: awaits a callback")
def t_callback() -> StepList:
    return begin >> write_a >> deploy_config >> write_c


@workflow("Engine test: a callback step whose condition the answer makes false")
def t_conditional_callback() -> StepList:
    # A condition an author could write: "deploy unless it was deployed": the answer itself flips it.
    return begin >> conditional(lambda state: "deploy_result" not in state)(deploy_config) >> write_c


@workflow("Engine test: two callback steps in a row")
def t_two_callbacks() -> StepList:
    return begin >> deploy_config >> callback_step("Verify config", action=verify, result_key="verify_result")


# The moment the timer test's maintenance window opens (ISO 8601), set by the test.
WINDOW = {"start": ""}


@step("Plan the window")
def plan_window() -> State:
    return {"window_start": WINDOW["start"]}


@wait_until("Wait for the maintenance window")
def maintenance_window(window_start: str) -> str:
    return window_start


@step("Change in the window")
def change_in_window(process_id: str) -> State:
    effect(f"window-{process_id}")
    return {"changed": True}


@workflow("Engine test: waits for a moment")
def t_timer() -> StepList:
    return begin >> plan_window >> maintenance_window >> change_in_window


@workflow("Engine test: sleeps five minutes")
def t_sleep() -> StepList:
    return begin >> sleep(timedelta(minutes=5)) >> write_c
