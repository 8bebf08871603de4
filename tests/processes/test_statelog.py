"""The step log keeps each step's delta and a snapshot now and then; the state after every step is still there.

Property-style: random sequences of steps that add, change and remove keys (with random sizes, so that
snapshots fall at varied places), run through the real engine, with failures and retries in between; the
state rebuilt after each row must equal the state computed step by step in Python. Rows written before
deltas existed (the whole state on every row, no delta) must still read the same.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid

import pytest
from django.utils import timezone

from processes import statelog
from processes.engine import current_state
from processes.models import Process, ProcessStatus, ProcessStep
from processes.services import retry_process, start_process
from processes.steppages import step_page
from tests.factories import UserFactory
from workflows.dsl import REMOVE, State, StepList, begin, step
from workflows.registry import unregister, workflow
from workflows.sync import workflow_row

pytestmark = pytest.mark.django_db(transaction=True)

# Which step fails its next run, per workflow name (set by a test, cleared when it has failed once).
FAIL_ONCE: dict[str, int] = {}


def _random_results(rng: random.Random, steps: int) -> list[dict]:
    """What each step returns: new keys, changed keys (nested values too), removed keys, some no-ops."""
    keys: set[str] = set()
    results = []
    for position in range(steps):
        result: dict = {}
        for _ in range(rng.randint(0, 3)):
            choice = rng.random()
            if keys and choice < 0.25:
                key = rng.choice(sorted(keys))
                result[key] = REMOVE
                keys.discard(key)
            elif keys and choice < 0.55:
                key = rng.choice(sorted(keys))
                result[key] = {"v": rng.randint(0, 9), "text": "y" * rng.randint(0, 400)}
            else:
                key = f"k{position}_{rng.randint(0, 99)}"
                result[key] = rng.choice([rng.randint(0, 10**6), "x" * rng.randint(0, 3000), [1, "two", None],
                                          {"nested": {"deep": position}}, None, True])
                keys.add(key)
        if rng.random() < 0.1:
            result = {"removed_twice_or_never_there": REMOVE}
        results.append(result)
    return results


def _declare(name: str, results: list[dict]) -> None:
    def make(position: int, result: dict):
        @step(f"Step {position}")
        def body() -> State:
            if FAIL_ONCE.get(name) == position:
                del FAIL_ONCE[name]
                raise RuntimeError(f"step {position} fails once")
            return dict(result)

        return body

    def steps() -> StepList:
        chain = begin
        for position, result in enumerate(results, start=1):
            chain = chain >> make(position, result)
        return chain

    workflow(f"State log property test {name}", name=name)(steps)


def _expected_states(initial: dict, results: list[dict]) -> list[dict]:
    states, state = [dict(initial)], dict(initial)
    for result in results:
        state = dict(state)
        for key, value in result.items():
            if value is REMOVE:
                state.pop(key, None)
            else:
                state[key] = json.loads(json.dumps(value))
        states.append(state)
    return states


@pytest.mark.parametrize("seed", range(12))
def test_the_state_rebuilt_after_every_step_equals_the_state_computed_step_by_step(seed, settings):
    rng = random.Random(seed)
    # Small row caps in some rounds, so that snapshots are forced by the row count as well as by size.
    settings.ORCHESTRATOR = {"STATE_SNAPSHOT_MAX_ROWS": rng.choice([2, 3, 7, 100])}
    results = _random_results(rng, rng.randint(5, 40))
    name = f"t_statelog_{seed}"
    _declare(name, results)
    fail_at = rng.randint(1, len(results))
    FAIL_ONCE[name] = fail_at
    try:
        process = start_process(name, by="prop")
        assert process.status == ProcessStatus.FAILED
        # The failed row changed nothing: the state is that after the step before it.
        initial = ProcessStep.objects.filter(process=process).order_by("id").first().state_after()
        expected = _expected_states(initial, results)
        assert current_state(process) == expected[fail_at - 1]
        process = retry_process(process.pk, by="prop")
        assert process.status == ProcessStatus.COMPLETED, process.failed_reason

        rows = list(ProcessStep.objects.filter(process=process).order_by("id"))
        body = [row for row in rows if row.name.startswith("Step ") and row.status == "success"]
        assert len(body) == len(results)
        for position, row in enumerate(body, start=1):
            assert row.state_after() == expected[position], f"after step {position}"
            assert row.delta is not None
        failed = next(row for row in rows if row.status == "failed")
        assert failed.state_after() == expected[fail_at - 1]
        assert current_state(process) == expected[-1]
        # Paging through the log gives the same states, whatever page boundaries fall where.
        for size in (1, 4, 50):
            seen = []
            offset = 0
            while True:
                page = step_page(process, offset=offset, limit=size)
                seen += [shown for _, shown in page.items]
                if page.later_offset is None:
                    break
                offset = page.later_offset
            assert [shown.after for shown in seen] == [row.state_after() for row in rows]
            for shown in seen:
                assert statelog.apply(shown.before, shown.delta) == shown.after
        # Something was saved by deltas: not every row holds the whole state.
        if len(results) > 10:
            assert any(row.state is None for row in rows)
    finally:
        unregister(name)
        FAIL_ONCE.pop(name, None)


def test_random_entries_replayed_from_any_snapshot_give_every_state_back(settings):
    """The snapshot rule alone, without a database: 300 random sequences."""
    for seed in range(300):
        rng = random.Random(seed)
        settings.ORCHESTRATOR = {"STATE_SNAPSHOT_MAX_ROWS": rng.choice([1, 2, 5, 100])}
        states = _expected_states({"process_id": "p"}, _random_results(rng, rng.randint(1, 30)))
        rows = [(0, states[0], None)]
        since = statelog.snapshot_since(states[0])
        for number, (before, after) in enumerate(itertools.pairwise(states), start=1):
            entry = statelog.entry(after, statelog.diff(before, after), since)
            since = entry.since
            rows.append((number, json.loads(entry.state_json) if entry.state_json else None,
                         json.loads(entry.delta_json)))
        for upto in range(len(rows)):
            last_snapshot = max(i for i in range(upto + 1) if rows[i][1] is not None)
            assert statelog.replay(rows[last_snapshot:upto + 1]) == states[upto], (seed, upto)
            assert upto - last_snapshot < max(int(settings.ORCHESTRATOR["STATE_SNAPSHOT_MAX_ROWS"]), 1) + 1


def _legacy_process(states: list[dict]) -> Process:
    """A process as the engine wrote it before deltas: every row holds the whole state, no delta."""
    from processes.models import ProcessLease  # noqa: F401  (the model set is loaded)
    from workflows.registry import get_workflow

    spec = get_workflow("t_writes")
    process = Process.objects.create(workflow=workflow_row(spec), status=ProcessStatus.FAILED, created_by="old",
                                     acting_user="old", current_step=2, workflow_version=spec.version,
                                     last_step="Write B then maybe fail", failed_reason="old failure")
    now = timezone.now()
    names = ["Start", "Write A", "Write B then maybe fail"]
    statuses = ["success", "success", "failed"]
    ProcessStep.objects.bulk_create(
        ProcessStep(process=process, name=name, status=status, state=state, created_by="old", started_at=now,
                    completed_at=now)
        for name, status, state in zip(names, statuses, states, strict=True)
    )
    return process


def test_rows_written_before_deltas_read_the_same_and_their_process_can_be_retried(staff_client):
    pid = str(uuid.uuid4())
    start = {"process_id": pid, "workflow": "t_writes", "created_by": "old", "gone_later": 1}
    after_a = {"process_id": pid, "workflow": "t_writes", "created_by": "old", "a_written": True}
    process = _legacy_process([start, after_a, after_a])
    rows = list(ProcessStep.objects.filter(process=process).order_by("id"))
    assert all(row.delta is None for row in rows)

    assert current_state(process) == after_a
    assert [row.state_after() for row in rows] == [start, after_a, after_a]
    page = step_page(process)
    assert [shown.delta for _, shown in page.items] == [
        {"added": start, "changed": {}, "removed": []},
        {"added": {"a_written": True}, "changed": {}, "removed": ["gone_later"]},
        {"added": {}, "changed": {}, "removed": []},
    ]
    # The API and the admin page show them (deltas worked out from the old rows' states).
    staff = UserFactory(is_staff=True, is_superuser=True)
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff)
    body = api.get(f"/api/processes/{process.pk}/").json()
    assert body["current_state"] == after_a
    assert body["steps"][1]["state_delta"]["removed"] == ["gone_later"]
    assert api.get(body["steps"][0]["url"]).json()["state"] == start
    page_html = staff_client.get(f"/admin/processes/process/{process.pk}/change/").content.decode()
    assert "gone_later" in page_html and "a_written" in page_html

    # Retrying it continues from the old rows' state and writes new-style rows after them.
    process = retry_process(process.pk, by="new")
    assert process.status == ProcessStatus.COMPLETED
    final = current_state(process)
    assert final["a_written"] is True and final["b_written"] is True and final["c_written"] is True
    new_rows = list(ProcessStep.objects.filter(process=process).order_by("id"))[3:]
    assert new_rows and all(row.delta is not None for row in new_rows)


def test_a_step_can_remove_a_key_and_the_log_says_so():
    @step("Add scratch")
    def add() -> State:
        return {"scratch": "temporary", "kept": 1}

    @step("Drop scratch")
    def drop() -> State:
        return {"scratch": REMOVE, "never_there": REMOVE}

    workflow("Removes a key", name="t_removes_a_key")(lambda: begin >> add >> drop)
    try:
        process = start_process("t_removes_a_key")
        assert process.status == ProcessStatus.COMPLETED
        assert "scratch" not in current_state(process) and current_state(process)["kept"] == 1
        drop_row = ProcessStep.objects.get(process=process, name="Drop scratch")
        assert drop_row.delta == {"added": {}, "changed": {}, "removed": ["scratch"]}
    finally:
        unregister("t_removes_a_key")


def _log_bytes_per_step(process: Process, steps: int) -> float:
    """Bytes of state and delta the log holds for the process, per step of its workflow's body."""
    rows = ProcessStep.objects.filter(process=process).values_list("state", "delta")
    total = sum(len(json.dumps(state)) if state is not None else 0 for state, _ in rows)
    total += sum(len(json.dumps(delta)) if delta is not None else 0 for _, delta in rows)
    return total / steps


def test_the_log_of_a_200_step_process_costs_per_step_what_a_10_step_ones_does():
    """The issue's figure: 1 kB added per step; the whole state on every row made this 100 kB per step."""
    from processes.bench_workflow import declare_bench_workflow

    short, long = declare_bench_workflow(10, 1024), declare_bench_workflow(200, 1024)
    try:
        small = start_process(short.name)
        big = start_process(long.name)
        assert small.status == big.status == ProcessStatus.COMPLETED
        per_step_small, per_step_big = _log_bytes_per_step(small, 10), _log_bytes_per_step(big, 200)
        assert per_step_big <= 1.2 * per_step_small, (per_step_small, per_step_big)
        # And far from the whole state on every row (about 100 kB a row at the end).
        assert per_step_big < 4 * 1024
    finally:
        unregister(short.name)
        unregister(long.name)
