"""A process's children and its parent as the admin and the API show them: per children step a summary and the
children (capped), what an `awaiting_children` parent waits for, and a child's link to its parent."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, F, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Value, Window
from django.db.models.functions import Coalesce, RowNumber

from orchestrator_site.errors import OrchestratorError
from processes.joins import summary_text
from processes.lookups import step_label
from processes.models import RETRYABLE, Process, ProcessStatus
from workflows.dsl import StepKind
from workflows.registry import get_workflow

logger = logging.getLogger(__name__)

P = ProcessStatus

# A step's children listed on the parent's page and in its API detail: the first CHILDREN_SHOWN items, then the
# later ones that need a human (failed, waiting...), at most ATTENTION_SHOWN of each such status. A parent of
# 10,000 children stays a page of a few hundred rows; the list filtered by parent (?parent=) pages through all.
CHILDREN_SHOWN = 200
ATTENTION_SHOWN = 50
# The children a waiting parent's text names, with their reasons (the others are counted).
NAMED_IN_TEXT = 3
REASON_CHARS = 300
# The statuses of a child that stop its parent until someone retries or skips it (or it retries itself).
ATTENTION = tuple(RETRYABLE)


@dataclass(frozen=True)
class ChildRow:
    """One item of a children step: the child of its latest round."""

    item: int  # from 1, as people count; the child's child_index + 1
    process_id: uuid.UUID
    workflow: str
    status: str
    round: int
    failed_reason: str

    @property
    def status_label(self) -> str:
        return str(P(self.status).label)

    @property
    def short_id(self) -> str:
        return str(self.process_id)[:8] + "…"

    @property
    def needs_attention(self) -> bool:
        return self.status in ATTENTION


@dataclass(frozen=True)
class ChildrenStep:
    """The children one step of the parent started: counts of the latest round per item, and the rows listed."""

    position: int  # the step's position in the parent's workflow, from 0
    name: str
    total: int  # items (one child each: its latest round)
    counts: dict[str, int]
    rows: list[ChildRow]
    replaced: int  # children of earlier rounds, aborted and replaced by a retry of the parent
    current: bool  # the step the parent is at

    @property
    def number(self) -> int:
        return self.position + 1

    @property
    def summary(self) -> str:
        return summary_text(self.counts)

    @property
    def workflow(self) -> str:
        """The children's workflow when they share one (sub-processes); "" for parallel branches."""
        names = {row.workflow for row in self.rows}
        return names.pop() if len(names) == 1 else ""

    @property
    def more(self) -> int:
        """Items not listed."""
        return self.total - len(self.rows)

    @property
    def listed_in_order(self) -> int:
        """Items listed from the first one on (the rest listed are later ones that need a human)."""
        return min(self.total, CHILDREN_SHOWN)

    @property
    def attention_beyond(self) -> int:
        return sum(1 for row in self.rows if row.item > CHILDREN_SHOWN)


@dataclass(frozen=True)
class Children:
    """A parent's children, per step that started any (oldest step first)."""

    steps: list[ChildrenStep]
    # What an awaiting_children parent waits for, naming the children that stop it; "" otherwise.
    waiting: str = ""
    # Changes whenever a child is added or moves: the detail's ETag takes it in (see children_stamp).
    stamp: str = ""

    @property
    def total(self) -> int:
        return sum(step.total for step in self.steps)


@dataclass(frozen=True)
class ParentLink:
    """Where a child belongs: "child 7 of process 1f3c… (t_fan_out), step 'Work on every item'"."""

    process_id: uuid.UUID
    workflow: str
    status: str
    step_position: int
    step_name: str
    item: int
    round: int

    @property
    def short_id(self) -> str:
        return str(self.process_id)[:8] + "…"

    @property
    def status_label(self) -> str:
        return str(P(self.status).label)

    @property
    def step_number(self) -> int:
        return self.step_position + 1

    @property
    def text(self) -> str:
        again = f", round {self.round}" if self.round > 1 else ""
        return (f"child {self.item} of process {self.short_id} ({self.workflow}), step {self.step_position + 1} "
                f"'{self.step_name}'{again}")


# --- reading ---------------------------------------------------------------------------------------------
def _newer_round() -> QuerySet[Process]:
    """A later round of the same item: the row is an aborted child that a retry of the parent replaced."""
    return Process.objects.filter(parent_id=OuterRef("parent_id"), parent_step=OuterRef("parent_step"),
                                  child_index=OuterRef("child_index"), child_round__gt=OuterRef("child_round"))


def may_have_children(process: Process) -> bool:
    """Whether the process's workflow has a children step, from the code (no query). When the workflow is gone
    from the code or changed since the process started, the database is asked (True)."""
    try:
        spec = get_workflow(process.workflow.name)
    except OrchestratorError:
        return True
    if list(spec.version) != list(process.workflow_version):
        return True
    return any(step.kind == StepKind.CHILDREN for step in spec.steps)


def stamp_of(count: int | None, modified: datetime | None) -> str:
    """The children's part of the parent's ETag: how many rows, and the last time any of them moved."""
    if not count or modified is None:
        return ""
    return f"{count}|{modified.isoformat()}"


def stamp_annotations() -> dict[str, Any]:
    """For the detail's If-None-Match check, in its one query of the process row: the children's count and last
    change (`children_count`, `children_modified`; an index probe that finds nothing for most processes)."""
    children = Process.objects.filter(parent_id=OuterRef("pk")).order_by().values("parent_id")
    return {
        "children_count": Coalesce(Subquery(children.annotate(n=Count("pk")).values("n")[:1]), Value(0),
                                   output_field=IntegerField()),
        "children_modified": Subquery(children.annotate(m=Max("last_modified_at")).values("m")[:1]),
    }


def children_of(process: Process) -> Children | None:
    """The process's children, per step that started any, or None when it has none.

    Two queries whatever their number (none for a workflow without a children step): the counts per step and
    status (of each item's latest round), then the rows listed (the first CHILDREN_SHOWN items of each step and
    up to ATTENTION_SHOWN later ones of each status that needs a human), with their workflow's name.
    """
    if not may_have_children(process):
        return None
    groups = (Process.objects.filter(parent_id=process.pk).order_by()
              .annotate(latest=~Exists(_newer_round()))
              .values_list("parent_step", "status", "latest")
              .annotate(n=Count("pk"), modified=Max("last_modified_at")))
    counts: dict[int, dict[str, int]] = {}
    replaced: dict[int, int] = {}
    total, modified = 0, None
    for step, status, latest, n, last in groups:
        total += n
        modified = last if modified is None or last > modified else modified
        if latest:
            counts.setdefault(step, {})[status] = n
        else:
            replaced[step] = replaced.get(step, 0) + n
            counts.setdefault(step, {})
    if not total:
        return None
    rows = _listed_rows(process.pk)
    version = list(process.workflow_version)
    steps = [
        ChildrenStep(position=step, name=step_label(version, step), total=sum(counts[step].values()),
                     counts=counts[step], rows=rows.get(step, []), replaced=replaced.get(step, 0),
                     current=step == process.current_step)
        for step in sorted(counts)
    ]
    waiting = waiting_text(process, steps) if process.status == P.AWAITING_CHILDREN else ""
    return Children(steps=steps, waiting=waiting, stamp=stamp_of(total, modified))


def _listed_rows(parent_id: uuid.UUID) -> dict[int, list[ChildRow]]:
    """The rows listed per step, in item order: one query, numbered per step by the database."""
    attention = Q(status__in=ATTENTION)
    rows = (
        Process.objects.filter(parent_id=parent_id).filter(~Exists(_newer_round()))
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("parent_step")], order_by=F("child_index").asc()),
            attention_rank=Window(RowNumber(), partition_by=[F("parent_step"), F("status")],
                                  order_by=F("child_index").asc()),
        )
        .filter(Q(rank__lte=CHILDREN_SHOWN) | (attention & Q(attention_rank__lte=ATTENTION_SHOWN)))
        .order_by("parent_step", "child_index")
        .values_list("parent_step", "child_index", "process_id", "workflow__name", "status", "child_round",
                     "failed_reason")
    )
    listed: dict[int, list[ChildRow]] = {}
    for step, index, pk, workflow, status, round_, reason in rows:
        listed.setdefault(step, []).append(ChildRow(item=index + 1, process_id=pk, workflow=workflow, status=status,
                                                    round=round_, failed_reason=reason))
    return listed


def waiting_text(process: Process, steps: list[ChildrenStep]) -> str:
    """"waiting for 48 children of modify_port: 46 completed, 1 failed, 1 running; item 7 (process 1f3c…)
    failed: <reason> — retry or skip that child to let this process go on"."""
    step = next((step for step in steps if step.current), None)
    if step is None:
        return f"waiting for its children at step {process.current_step + 1} '{process.last_step}'"
    what = step.workflow or f"step '{step.name}'"
    text = f"waiting for {step.total} {'child' if step.total == 1 else 'children'} of {what}: {step.summary}"
    stopping = [row for row in step.rows if row.needs_attention]
    if not stopping:
        return text
    for row in stopping[:NAMED_IN_TEXT]:
        reason = row.failed_reason
        if len(reason) > REASON_CHARS:
            reason = reason[:REASON_CHARS - 1].rstrip() + "…"
        text += f"; item {row.item} (process {row.short_id}) {row.status_label}" + (f": {reason}" if reason else "")
    unnamed = sum(step.counts.get(status, 0) for status in ATTENTION) - min(len(stopping), NAMED_IN_TEXT)
    if unnamed > 0:
        text += f"; and {unnamed} more failed or waiting"
    several = unnamed > 0 or len(stopping) > 1
    return text + (f" — retry or skip {'those children' if several else 'that child'} to let this process go on")


def parent_of(process: Process) -> ParentLink | None:
    """A child's parent, with the name of the step that started it (one query); None for a top-level process."""
    if process.parent_id is None:
        return None
    row = (Process.objects.filter(pk=process.parent_id)
           .values_list("workflow__name", "status", "workflow_version").first())
    if row is None:
        return None
    workflow, status, version = row
    position = process.parent_step if process.parent_step is not None else 0
    return ParentLink(process_id=process.parent_id, workflow=workflow, status=status, step_position=position,
                      step_name=step_label(list(version or []), position), item=(process.child_index or 0) + 1,
                      round=process.child_round)


def unfinished_children(process: Process) -> int:
    """How many of its children an abort of this process would abort with it (one count)."""
    return Process.objects.filter(parent_id=process.pk).exclude(status__in=(P.COMPLETED, P.ABORTED)).count()
