"""Deleting finished tasks in families: a child goes only with the top of its family, and a family with a
workflow's process (the audit record of a subscription's change) or an unfinished process below its top is
kept whole, by the daily clean-up and by an operator's delete alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator_site.errors import Conflict
from processes.engine import current_state
from processes.models import Process, ProcessStep
from processes.services import delete_task, resume_process, start_process
from tests.processes import compose_flows  # noqa: F401  (its workflows)

pytestmark = pytest.mark.django_db(transaction=True)


def family(parent: Process) -> list[Process]:
    return [parent, *Process.objects.filter(parent=parent).order_by("child_index")]


def make_old(processes: list[Process], days: float = 40) -> None:
    then = timezone.now() - timedelta(days=days)
    Process.objects.filter(pk__in=[p.pk for p in processes]).update(started_at=then, last_modified_at=then)


def exists(processes: list[Process]) -> list[bool]:
    return [Process.objects.filter(pk=p.pk).exists() for p in processes]


def test_the_clean_up_deletes_an_all_task_family_whole_and_keeps_families_with_workflows_or_unfinished_members(
    settings,
):
    settings.ORCHESTRATOR = {"TASK_RETENTION_DAYS": 30}
    tasks_only = family(start_process("t_task_fans_out_tasks", user_input={"count": 3, "tag": "gone"}))
    over_workflows = family(start_process("t_task_fans_out_workflows", user_input={"count": 2, "tag": "audit"}))
    under_workflow = family(start_process("t_fans_out_tasks", user_input={"count": 2, "tag": "under"}))
    waiting = family(start_process("t_task_fan_out", user_input={"count": 2, "tag": "wait"}))
    resume_process(waiting[1].process_id, {"confirm": True}, by="bob")  # one child done, its sibling waits
    assert [p.status for p in (tasks_only[0], over_workflows[0], under_workflow[0])] == ["completed"] * 3
    assert [Process.objects.get(pk=p.pk).status for p in waiting] == ["awaiting_children", "completed",
                                                                       "suspended"]
    make_old([*tasks_only, *over_workflows, *under_workflow, *waiting])

    cleanup = start_process("task_clean_up_tasks")

    assert cleanup.status == "completed"
    # The all-task family went whole (its 3 children counted with it), with its log.
    assert current_state(cleanup)["tasks_deleted"] == 4
    assert exists(tasks_only) == [False] * 4
    assert not ProcessStep.objects.filter(process_id__in=[p.pk for p in tasks_only]).exists()
    # A task over workflows' processes: the audit record of their subscriptions' changes stays, with it.
    assert exists(over_workflows) == [True] * 3
    # Task children of a workflow's process are part of its record.
    assert exists(under_workflow) == [True] * 3
    # The waiting parent keeps its finished child: deleted, its item would be missing from the merge.
    assert exists(waiting) == [True] * 3
    resume_process(waiting[2].process_id, {"confirm": True}, by="bob")
    assert Process.objects.get(pk=waiting[0].pk).status == "completed"
    assert [r["doubled"] for r in current_state(waiting[0])["items"]] == [0, 2]


def test_an_operator_cannot_delete_a_task_whose_children_include_a_workflows_process():
    parent, *kids = family(start_process("t_task_fans_out_workflows", user_input={"count": 2, "tag": "keep"}))
    assert parent.status == "completed" and parent.is_task and not kids[0].is_task

    with pytest.raises(Conflict, match=f"its child process {kids[0].process_id} \\(t_child_item\\) is a workflow's"):
        delete_task(parent.process_id, by="ops")
    assert exists([parent, *kids]) == [True] * 3

    tasks = family(start_process("t_task_fans_out_tasks", user_input={"count": 2, "tag": "drop"}))
    delete_task(tasks[0].process_id, by="ops")
    assert exists(tasks) == [False] * 3
