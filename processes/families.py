"""Which finished processes may be deleted, given their children: one answer for delete_task and the clean-up.

A child process is part of its parent's record, and deleting a process deletes its children with it (the
foreign key cascades). So only the top of a family is ever deleted, and only when every process below it is
a finished task: a workflow's process among them is the audit record of a subscription's change, and a child
still waiting or running would lose its parent (or, deleted on its own, leave a waiting parent to merge
without its item).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from processes.models import Process, ProcessStatus

ENDED = (ProcessStatus.COMPLETED, ProcessStatus.ABORTED)


def family_refusal(process: Process) -> str:
    """Why this finished task's process may not be deleted for its place in a family; empty if it may."""
    if process.parent_id is not None:
        return (f"it is child {process.child_index + 1} of process {process.parent_id}, part of that process's "
                f"record; delete that process instead (its children go with it), if it is a finished task")
    below = _descendants([process.pk])[process.pk]
    unfinished = [pk for pk, status, _, _ in below if status not in ENDED]
    if unfinished:
        return (f"{len(unfinished)} of its child processes (such as {unfinished[0]}) are not finished yet; "
                f"abort them first, or wait for its abort to reach them")
    workflows = [(pk, name) for pk, _, is_task, name in below if not is_task]
    if workflows:
        pk, name = workflows[0]
        return (f"its child process {pk} ({name}) is a workflow's, the audit record of a subscription's change, "
                f"and would be deleted with it; a task with workflows among its children is kept")
    return ""


def kept_for_their_children(process_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Of these top-level processes, the ones to keep for what is below them (a workflow's process, or one
    not finished): one query per generation of children, whatever their number."""
    return {root for root, below in _descendants(process_ids).items()
            if any(status not in ENDED or not is_task for _, status, is_task, _ in below)}


def _descendants(root_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[tuple[uuid.UUID, str, bool, str]]]:
    """Every process below each root: (id, status, is_task, workflow name), generation by generation."""
    out: dict[uuid.UUID, list[tuple[uuid.UUID, str, bool, str]]] = {pk: [] for pk in root_ids}
    root_of = {pk: pk for pk in out}
    level = list(out)
    while level:  # composition is shallow: a few generations at most
        rows = list(Process.objects.filter(parent_id__in=level)
                    .order_by("parent_id", "parent_step", "child_index", "child_round")  # a message names the first
                    .values_list("pk", "parent_id", "status", "is_task", "workflow__name"))
        for pk, parent_id, status, is_task, name in rows:
            root_of[pk] = root_of[parent_id]
            out[root_of[pk]].append((pk, status, is_task, name))
        level = [row[0] for row in rows]
    return out
