"""The process commands show a parent's children and a child's parent, and list a parent's children."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from processes.models import Process
from processes.services import start_process
from tests.processes import compose_flows

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def reset_compose_flows():
    compose_flows.FAILING.clear()
    yield
    compose_flows.FAILING.clear()


def test_show_process_lists_a_parents_children_with_the_failed_ones_reason_and_a_childs_parent():
    compose_flows.FAILING.add(1)
    parent = start_process("t_fan_out", user_input={"count": 3, "tag": "cli"}, by="alice")
    kids = list(Process.objects.filter(parent=parent).order_by("child_index"))

    shown = run("show_process", str(parent.process_id))
    assert "status     awaiting_children" in shown
    assert "children of step 2 (Work on every item): 3: 2 completed, 1 failed" in shown
    assert f"  item    2  {kids[1].process_id}  failed            round 1  Work on the item: the device for item 1 " \
           f"did not answer" in shown
    assert f"  item    1  {kids[0].process_id}  completed         round 1\n" in shown

    child = run("show_process", str(kids[1].process_id))
    assert f"parent     {parent.process_id}: child 2 of process {str(parent.process_id)[:8]}… (t_fan_out), step 2 " \
           f"'Work on every item'" in child


def test_list_processes_lists_a_parents_children_in_item_order_or_leaves_children_out():
    parent = start_process("t_fan_out", user_input={"count": 3, "tag": "list"}, by="alice")
    kids = list(Process.objects.filter(parent=parent).order_by("child_index"))

    listed = run("list_processes", "--parent", str(parent.process_id)).splitlines()
    assert [line.split()[0] for line in listed[:-1]] == [str(k.process_id) for k in kids]
    assert listed[-1] == "3 of 3 processes."
    top = run("list_processes", "--top-level")
    assert str(parent.process_id) in top
    assert not any(str(k.process_id) in top for k in kids)

    with pytest.raises(CommandError, match="is not a process id"):
        run("list_processes", "--parent", "nope")
    with pytest.raises(CommandError, match="give one of them"):
        run("list_processes", "--parent", str(parent.process_id), "--top-level")
