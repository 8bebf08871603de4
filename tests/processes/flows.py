"""Workflows the engine tests run: each step does one observable thing the tests can check."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from django.db import connection, transaction
from rest_framework import serializers

from subscriptions.models import ResourceType
from workflows.dsl import Repeat, State, StepList, again, begin, conditional, inputstep, retrystep, step
from workflows.node.products import NodeProduct
from workflows.predicates import no_unfinished_instance
from workflows.registry import modify_workflow, task, terminate_workflow, workflow

# What the failing steps do, set by the tests: how many more times to fail.
CONTROL: dict[str, int] = {"fail_times": 0, "retry_fail_times": 0, "kill_times": 0, "moon_full": 0,
                           "fail_at_run": 0, "pause_at_run": 0, "abort_at_run": 0, "log_fail_times": 0}


def effect(name: str) -> None:
    """A database write the tests can count: one ResourceType row per effect."""
    ResourceType.objects.create(resource_type=name, description="engine test effect")


@step("Write A")
def write_a(process_id: str) -> State:
    effect(f"a-{process_id}")
    return {"a_written": True}


@step("Write B then maybe fail")
def write_b_then_fail(process_id: str, a_written: bool) -> State:
    effect(f"b-{process_id}")
    if CONTROL["fail_times"] > 0:
        CONTROL["fail_times"] -= 1
        raise RuntimeError("the external system said no")
    return {"b_written": a_written}


@step("Write C")
def write_c(process_id: str, b_written: bool = False) -> State:
    effect(f"c-{process_id}")
    return {"c_written": b_written}


@workflow("Engine test: three writes, the second may fail")
def t_writes() -> StepList:
    return begin >> write_a >> write_b_then_fail >> write_c


@step("Commit in the middle")
def commit_inside(process_id: str) -> State:
    effect(f"commit-{process_id}")
    transaction.commit()
    return {}


@workflow("Engine test: a step that commits")
def t_commit() -> StepList:
    return begin >> commit_inside


@step("Return an object")
def return_object() -> State:
    return {"thing": object()}


@workflow("Engine test: a step that returns what JSON cannot hold")
def t_unserialisable() -> StepList:
    return begin >> return_object


@step("Needs a key")
def needs_key(colour: str) -> State:
    return {"seen": colour}


@workflow("Engine test: a step that needs a key nobody provides")
def t_missing_key() -> StepList:
    return begin >> needs_key


@step("Takes what it needs")
def takes(process_id: str, size: int = 3, state: dict | None = None) -> State:
    return {"size_seen": size, "keys_seen": sorted(state or {}), "process_seen": process_id}


@step("Big only")
def big_only() -> State:
    return {"big": True}


@workflow("Engine test: injection and conditions")
def t_injection() -> StepList:
    return begin >> takes >> conditional(lambda s: s.get("size_seen", 0) > 5)(big_only)


class ColourForm(serializers.Serializer):
    colour = serializers.ChoiceField(choices=["red", "green"])


@inputstep("Choose a colour", form=ColourForm)
def choose_colour() -> State:
    return {"colour": "red"}


@workflow("Engine test: asks for input")
def t_input() -> StepList:
    return begin >> choose_colour >> needs_key


@retrystep("Call a flaky system")
def flaky(process_id: str) -> State:
    if CONTROL["retry_fail_times"] > 0:
        CONTROL["retry_fail_times"] -= 1
        effect(f"flaky-attempt-{process_id}-{CONTROL['retry_fail_times']}")  # rolled back with the failure
        raise ConnectionError("flaky system unreachable")
    return {"flaky_ok": True}


@workflow("Engine test: a retry step")
def t_retry() -> StepList:
    return begin >> flaky


@step("Write, then hang while the hang file exists")
def write_then_hang(process_id: str) -> State:
    effect(f"hang-{process_id}")
    folder = Path(os.environ.get("ENGINE_TEST_DIR", "/tmp"))
    marker = folder / f"{process_id}.inside"
    hang = marker.with_suffix(".hang")
    every = folder / "all.hang"  # for a test that cannot know the process id before it starts
    if hang.exists() or every.exists():
        # Tell the test we are inside the step, with the write done but not committed, and which OS
        # process we are (the worker to kill).
        marker.write_text(str(os.getpid()))
        while hang.exists() or every.exists():
            time.sleep(0.05)
    return {"hung": True}


@workflow("Engine test: a step a test can kill a worker in")
def t_killable() -> StepList:
    return begin >> write_a >> write_then_hang >> write_c


# --- a step that runs again (tests/processes/test_engine_repeat.py) -----------------------------------
def _abort_from_another_connection(process_id: str) -> None:
    """An operator aborts the process while this run of its step holds the process row."""
    from processes.services import abort_process

    def ask() -> None:
        try:
            abort_process(process_id, by="operator", reason="enough counting")
        finally:
            connection.close()  # this thread's own connection

    operator = threading.Thread(target=ask)
    operator.start()
    operator.join(timeout=30)


@step("Count to five, one per run")
def count_to_five(process_id: str, counted: int = 0) -> State | Repeat:
    run = counted + 1
    effect(f"count{run}-{process_id}")  # committed with its run, or rolled back with it
    if CONTROL["fail_at_run"] == run:
        CONTROL["fail_at_run"] = 0
        raise RuntimeError(f"run {run} failed")
    if CONTROL["pause_at_run"] == run:
        from processes.models import EngineSettings

        EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})  # commits with this run
    if CONTROL["abort_at_run"] == run:
        _abort_from_another_connection(process_id)
    return {"counted": run} if run == 5 else again({"counted": run})


@workflow("Engine test: a step that runs again until it has counted to five")
def t_repeat() -> StepList:
    return begin >> write_a >> count_to_five >> write_c


@step("Rename the node")
def rename_node(subscription: NodeProduct, new_name: str = "renamed") -> State:
    subscription.node.node_name = new_name
    return {"subscription": subscription}


@step("Hold the subscription")
def hold() -> State:
    # Long enough for a second process to reach its unsync while this one holds the subscription.
    time.sleep(float(os.environ.get("ENGINE_TEST_HOLD_SECONDS", "0")))
    return {}


@modify_workflow("Engine test: rename a node", product_types=["Node"])
def t_rename_node() -> StepList:
    return begin >> hold >> rename_node


# A step the test holds open for as long as it likes (in this OS process): it says it is inside, then waits.
HELD = {"inside": threading.Event(), "release": threading.Event()}


@step("Held open by the test")
def held_open(process_id: str) -> State:
    effect(f"held-{process_id}")
    HELD["inside"].set()
    if not HELD["release"].wait(timeout=120):  # a test that forgot to release must not hang the suite
        raise RuntimeError("the test never released the step")
    return {"released": True}


@workflow("Engine test: a step held open until the test releases it")
def t_held() -> StepList:
    return begin >> held_open >> write_c


@step("Note the thread")
def note_thread(process_id: str) -> State:
    effect(f"thread-{process_id}")
    return {"thread": threading.current_thread().name}


@workflow("Engine test: notes the thread it runs in")
def t_thread() -> StepList:
    return begin >> note_thread


@step("Slow write 1")
def slow_1(process_id: str) -> State:
    effect(f"slow1-{process_id}")
    time.sleep(0.05)  # long enough for a second runner to queue up on the row lock
    return {}


@step("Slow write 2")
def slow_2(process_id: str) -> State:
    effect(f"slow2-{process_id}")
    time.sleep(0.05)
    return {}


@workflow("Engine test: two slow writes (duplicate runners)")
def t_slow() -> StepList:
    return begin >> slow_1 >> slow_2


class DeferredExecutor:
    """An executor that runs nothing: the test decides where the process runs (another OS process)."""

    def submit(self, process_id: object) -> None:
        return None


@step("Pause the engine")
def pause_the_engine() -> State:
    # As if staff paused the engine while this step ran: it commits with the step.
    from processes.models import EngineSettings

    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})
    return {"paused_it": True}


@workflow("Engine test: the engine is paused in the middle")
def t_paused_midway() -> StepList:
    return begin >> write_a >> pause_the_engine >> write_c


def _nap(process_id: str, n: int) -> State:
    effect(f"nap{n}-{process_id}")
    time.sleep(float(os.environ.get("ENGINE_TEST_NAP_SECONDS", "0.3")))
    return {}


@step("Nap 1")
def nap_1(process_id: str) -> State:
    return _nap(process_id, 1)


@step("Nap 2")
def nap_2(process_id: str) -> State:
    return _nap(process_id, 2)


@step("Nap 3")
def nap_3(process_id: str) -> State:
    return _nap(process_id, 3)


@workflow("Engine test: three steps that take a moment (pause while they run)")
def t_naps() -> StepList:
    return begin >> nap_1 >> nap_2 >> nap_3


# --- fault injection (tests/processes/test_engine_faults.py) -----------------------------------------
def kill_own_connection() -> None:
    """Make the server end this very connection, as a fail-over or `pg_terminate_backend` would."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@step("Write B, losing the connection")
def write_b_losing_connection(process_id: str) -> State:
    effect(f"b-{process_id}")  # written, then lost with the connection: the retried step writes it again
    if CONTROL.get("kill_times", 0) > 0:
        CONTROL["kill_times"] -= 1
        kill_own_connection()
    return {"b_written": True}


@workflow("Engine test: the second step loses the database connection")
def t_lose_connection() -> StepList:
    return begin >> write_a >> write_b_losing_connection >> write_c


@step("Fail with a NUL byte")
def fail_with_nul(process_id: str) -> State:
    effect(f"nul-{process_id}")
    raise ValueError("the device answered b'OK\x00\x00garbage'")


@workflow("Engine test: a step whose error message holds NUL bytes")
def t_nul_error() -> StepList:
    return begin >> write_a >> fail_with_nul


@step("Return a NUL byte")
def return_nul() -> State:
    return {"banner": "router\x00"}


@workflow("Engine test: a step that returns text PostgreSQL cannot store")
def t_nul_state() -> StepList:
    return begin >> write_a >> return_nul


@step("Take a long time")
def take_long(process_id: str) -> State:
    effect(f"long-{process_id}")
    time.sleep(float(os.environ.get("ENGINE_TEST_LONG_SECONDS", "3")))
    return {"long_done": True}


@workflow("Engine test: a step longer than the lease")
def t_long() -> StepList:
    return begin >> take_long >> write_c


@step("Start many processes")
def start_many(count: int = 300) -> State:
    from processes.services import start_process

    ids = [str(start_process("t_writes").process_id) for _ in range(count)]
    return {"started": len(ids)}


@workflow("Engine test: a step that starts many processes in its transaction")
def t_many_starts() -> StepList:
    return begin >> start_many


# --- relations between subscriptions, before/after, predicates (issue: subscriptions that depend on each other)
class ConfirmForm(serializers.Serializer):
    confirm = serializers.BooleanField()


@inputstep("Confirm", form=ConfirmForm)
def confirm() -> State:
    return {"confirm": True}


@modify_workflow("Engine test: holds a port until confirmed", product_types=["Port"])
def t_hold_port() -> StepList:
    return begin >> confirm


@modify_workflow("Engine test: holds a node until confirmed", product_types=["Node"])
def t_hold_node() -> StepList:
    return begin >> confirm


@terminate_workflow("Engine test: terminates a node once confirmed", product_types=["Node"])
def t_terminate_node_confirm() -> StepList:
    return begin >> confirm


@step("Rename the node and describe it")
def rename_and_describe(subscription: NodeProduct, new_name: str = "renamed") -> State:
    subscription.node.node_name = new_name
    subscription.description = f"Node {new_name}"
    return {"subscription": subscription}


@step("Fail after renaming")
def fail_after_renaming() -> State:
    if CONTROL["fail_times"] > 0:
        CONTROL["fail_times"] -= 1
        raise RuntimeError("the router refused the new name")
    return {}


@modify_workflow("Engine test: renames a node, then may fail", product_types=["Node"])
def t_rename_then_fail() -> StepList:
    return begin >> rename_and_describe >> fail_after_renaming


def the_moon_is_full(context) -> str | None:
    return None if CONTROL.get("moon_full") else "the moon is not full; this task runs only at full moon"


@task("Engine test: starts only when its predicate agrees", run_predicate=the_moon_is_full)
def t_moon_task() -> StepList:
    return begin >> note_thread


@task("Engine test: one at a time, waits for input", run_predicate=no_unfinished_instance)
def t_single_task() -> StepList:
    return begin >> confirm


def broken_predicate(context) -> str | None:
    raise KeyError("moon_phase")


@task("Engine test: its predicate has a bug", run_predicate=broken_predicate)
def t_broken_predicate_task() -> StepList:
    return begin >> note_thread


@step("Note the database connection")
def note_backend() -> State:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return {"backend": cursor.fetchone()[0]}


@workflow("Engine test: notes the database connection it runs on")
def t_backend() -> StepList:
    return begin >> note_backend


# A step function logging through a logger of its own, as a workflow's steps do.
step_logger = logging.getLogger("tests.workflow_steps")


@step("Log a line")
def log_a_line(process_id: str) -> State:
    step_logger.info("step one of %s says hello", process_id)
    return {}


@step("Log then maybe fail")
def log_then_fail(process_id: str) -> State:
    step_logger.info("step two of %s is about to decide", process_id)
    if CONTROL["log_fail_times"] > 0:
        CONTROL["log_fail_times"] -= 1
        raise RuntimeError("the step gave up")
    return {}


@workflow("Engine test: its steps log")
def t_logs() -> StepList:
    return begin >> log_a_line >> log_then_fail
