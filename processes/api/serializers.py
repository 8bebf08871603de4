"""Request and response shapes of the process API (`/api/processes/`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from processes.children import ATTENTION_SHOWN, CHILDREN_SHOWN
from processes.models import Process, ProcessStatus, ProcessStep, StepStatus
from processes.services import NOTE_MAX_LENGTH


# --- requests ----------------------------------------------------------------------------------------
class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not declare: a misspelt key must not be ignored silently."""

    def to_internal_value(self, data: Any) -> Any:
        unknown: dict[str, list[str]] = {}
        if isinstance(data, Mapping):
            expected = ", ".join(self.fields) or "none"
            unknown = {key: [f"unknown field; expected one of: {expected}"] for key in data if key not in self.fields}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from exc
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class TextField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField turns `5` into `"5"`, a guess that makes a wrong type
    look like an unknown name or id (404) instead of the invalid input it is (400, naming the field)."""

    default_error_messages = {"not_text": "Must be a string, not {kind}."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_text", kind=json_kind(data))
        return super().to_internal_value(data)


def json_kind(value: Any) -> str:
    """What a decoded JSON value was, in JSON's words (a client sent JSON, not Python)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


class StartProcessSerializer(StrictSerializer):
    workflow = TextField(max_length=100, help_text="The workflow's name (see /api/workflows/).")
    # A plain string, not a UUID field: an id that is not a subscription's (malformed or unknown) is a 404
    # from the service, the same answer for both.
    subscription = TextField(
        max_length=100, required=False, allow_null=True, default=None,
        help_text="The id (UUID) of the subscription to work on; null for a create workflow or a task.",
    )
    input = serializers.DictField(
        required=False, default=dict, help_text="The workflow's initial input form (see the workflow's `form`)."
    )
    # No default: a request without it is the same request as before the field existed (idempotency keys).
    subscription_version = serializers.IntegerField(
        required=False, min_value=0,
        help_text="The subscription's `version` as the client saw it: if it changed since, the start is refused "
                  "(409, stale) instead of acting on a subscription the user has not seen.",
    )


class ResumeProcessSerializer(StrictSerializer):
    input = serializers.DictField(
        required=False, default=dict, help_text="The input the suspended process waits for (see its `form`)."
    )


class AbortProcessSerializer(StrictSerializer):
    reason = TextField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="Why the process is aborted; kept in its log.")


class SkipStepSerializer(StrictSerializer):
    # Blank passes here and is refused by the service, which owns the rule (as for the admin and commands).
    reason = TextField(allow_blank=True, max_length=2000,
                       help_text="Required: why it is safe to go on without the failed step (its work was done "
                                 "by other means); kept in the process's log with your name.")


class DeliverCallbackSerializer(StrictSerializer):
    payload = serializers.JSONField(help_text="The answer, as the external system would have sent it (any JSON).")
    # Blank passes here and is refused by the service, which owns the rule (as for the admin).
    reason = TextField(allow_blank=True, max_length=2000,
                       help_text="Required: where the answer came from; kept in the process's log with your name.")


class ProcessNoteSerializer(StrictSerializer):
    # No length or blank rule here: the service owns them (as for the admin), and says the length it found.
    note = TextField(allow_blank=True, trim_whitespace=False,
                     help_text=f"Staff's note on the process; blank clears it. At most {NOTE_MAX_LENGTH} characters.")


class EmptySerializer(StrictSerializer):
    """No fields: an empty body (or `{}`)."""


# --- responses ---------------------------------------------------------------------------------------
class ProcessRefSerializer(serializers.Serializer):
    """The process an action started or moved on, and its status once the executor has had it."""

    id = serializers.UUIDField(source="process_id", read_only=True)
    status = serializers.ChoiceField(choices=ProcessStatus.choices, read_only=True)


class AbortPendingSerializer(ProcessRefSerializer):
    """A step of the process is running: it is aborted when that step ends (its next step boundary)."""

    detail = serializers.CharField(source="abort_message", read_only=True)


def absolute(serializer: serializers.Serializer, path: str) -> str:
    """`path` as an absolute URL when the serializer has the request (as the views give it), else the path."""
    request = serializer.context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


class ProcessListItemSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="process_id", read_only=True)
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    status = serializers.ChoiceField(choices=ProcessStatus.choices, read_only=True)
    subscriptions = serializers.SerializerMethodField(help_text="Ids of the subscriptions the process works on.")
    parent = serializers.UUIDField(
        source="parent_id", read_only=True, allow_null=True,
        help_text="A child process: the id of the process whose sub-processes or parallel step started it; null "
                  "for a top-level process. `?is_child=false` lists only top-level processes, `?parent=` a "
                  "process's children.")
    child_index = serializers.IntegerField(
        read_only=True, allow_null=True,
        help_text="A child process: its item's position in its parent's list, from 0 (the parent's `children` "
                  "number items from 1: `item` = child_index + 1); null for a top-level process.")

    class Meta:
        model = Process
        fields = ["id", "workflow", "status", "last_step", "failed_reason", "created_by", "started_at",
                  "last_modified_at", "is_task", "note", "subscriptions", "parent", "child_index"]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
    def get_subscriptions(self, process: Process) -> list[Any]:
        # From the prefetched links (the view prefetches them): no query per process.
        return [link.subscription_id for link in process.process_subscriptions.all()]


class StateDeltaSerializer(serializers.Serializer):
    added = serializers.DictField(help_text="Keys the step added, with their values.")
    changed = serializers.DictField(help_text="Keys whose value the step changed, with their new values.")
    removed = serializers.ListField(child=serializers.CharField(), help_text="Keys the step removed.")


class ProcessStepSerializer(serializers.ModelSerializer):
    """A row of the step log with what the step changed; its whole state is one request away (`url`)."""

    number = serializers.IntegerField(read_only=True, help_text="Its place in the log, from 1.")
    status = serializers.ChoiceField(choices=StepStatus.choices, read_only=True)
    state_delta = StateDeltaSerializer(read_only=True, help_text="What the step changed in the state (a failed "
                                                                 "step: nothing, its work rolled back).")
    traceback = serializers.SerializerMethodField(
        help_text="The failed step's traceback: staff only (null for others)."
    )
    url = serializers.SerializerMethodField(help_text="This step with the whole state after it.")

    class Meta:
        model = ProcessStep
        fields = ["number", "name", "status", "state_delta", "started_at", "completed_at", "created_by", "attempt",
                  "error", "error_type", "traceback", "url"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_traceback(self, row: ProcessStep) -> str | None:
        return row.traceback if self.context.get("show_tracebacks") else None

    def get_url(self, row: ProcessStep) -> str:
        return absolute(self, reverse("process-step-detail", args=[row.process_id, row.number]))  # type: ignore[attr-defined]


class ProcessStepStateSerializer(ProcessStepSerializer):
    state = serializers.SerializerMethodField(
        help_text="The whole state after the step (a failed step: the state it started from); in the steps list "
                  "only with ?with_state=true, null otherwise.")

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_state(self, row: ProcessStep) -> dict[str, Any] | None:
        return getattr(row, "full_state", None)

    class Meta(ProcessStepSerializer.Meta):
        fields = [*ProcessStepSerializer.Meta.fields, "state"]
        read_only_fields = fields


class ProcessStepPageSerializer(serializers.Serializer):
    """A page of a process's step log (`?limit=&offset=`), oldest first."""

    count = serializers.IntegerField(help_text="Rows in the whole log.")
    count_exact = serializers.BooleanField(help_text="Always true here: one process's log is counted in full.")
    next = serializers.URLField(allow_null=True, help_text="The next page; null on the last.")
    previous = serializers.URLField(allow_null=True, help_text="The page before; null on the first.")
    results = ProcessStepStateSerializer(many=True, help_text="The steps; `state` is null without ?with_state=true.")


class PendingFormSerializer(serializers.Serializer):
    step = serializers.CharField(help_text="The input step waiting.")
    schema = serializers.DictField(help_text="The form as JSON Schema (draft 2020-12).")
    initial = serializers.DictField(help_text="The values to show first.")


class RunSerializer(serializers.Serializer):
    """Who runs the process now (its run record), and how often it had to be handed over again."""

    state = serializers.ChoiceField(choices=["queued", "claimed"], read_only=True,
                                    help_text="queued: handed to the executor, no worker took it yet; claimed: a "
                                              "run holds it.")
    owner = serializers.CharField(read_only=True, help_text="The run holding it (host:pid:token); empty if queued.")
    expires_at = serializers.DateTimeField(read_only=True, help_text="Claimed: when its lease lapses unless renewed; "
                                                                     "queued: when it is handed over again.")
    queued_at = serializers.DateTimeField(read_only=True)
    resends = serializers.IntegerField(read_only=True, help_text="Times handed over again while no worker took it.")
    recoveries = serializers.IntegerField(read_only=True, help_text="Times in a row its run died at this step.")
    last_error = serializers.CharField(read_only=True, help_text="The last infrastructure error seen for it.")
    abort_requested_by = serializers.CharField(read_only=True, allow_null=True,
                                               help_text="Who asked for an abort that waits for the step to end.")

    def to_representation(self, record: Any) -> dict[str, Any]:
        return {
            "state": "queued" if record.queued else "claimed", "owner": record.owner,
            "expires_at": serializers.DateTimeField().to_representation(record.expires_at),
            "queued_at": serializers.DateTimeField().to_representation(record.queued_at),
            "resends": record.resends, "recoveries": record.recoveries, "last_error": record.last_error,
            "abort_requested_by": record.abort_requested_by if record.abort_requested_at else None,
        }


class FieldChangeSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="A column (description, status) or a block value (node.node_name).")
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)


class SubscriptionDeltaSerializer(serializers.Serializer):
    subscription_id = serializers.UUIDField()
    complete = serializers.BooleanField(help_text="True once the process gave the subscription back; false: the "
                                                  "changes so far, against the subscription as it is now.")
    as_of = serializers.CharField(help_text="What the new values are: at the end of the process, or now.")
    changes = FieldChangeSerializer(many=True)


class ProgressMessageSerializer(serializers.Serializer):
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class WaitingForSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["callback", "timer"],
                                   help_text="callback: an external system's answer; timer: a moment.")
    step = serializers.CharField(help_text="The step that waits.")
    since = serializers.DateTimeField(help_text="When the waiting began.")
    deadline = serializers.DateTimeField(required=False, help_text="callback: when the step fails without an answer.")
    until = serializers.DateTimeField(required=False, help_text="timer: when the process goes on.")
    progress = ProgressMessageSerializer(many=True, help_text="callback: the progress messages sent meanwhile.")


class ChildOfSerializer(serializers.Serializer):
    """Where a child process belongs: its parent and the parent's step that started it."""

    id = serializers.UUIDField(source="process_id", help_text="The parent process.")
    url = serializers.SerializerMethodField(help_text="The parent's detail.")
    workflow = serializers.CharField(help_text="The parent's workflow.")
    status = serializers.ChoiceField(choices=ProcessStatus.choices, help_text="The parent's status.")
    step = serializers.IntegerField(source="step_number",
                                    help_text="The parent's step that started this child: its number in the parent's "
                                              "workflow, from 1.")
    step_name = serializers.CharField()
    item = serializers.IntegerField(help_text="This child's item in that step's list, from 1.")
    round = serializers.IntegerField(help_text="1; one more each time a retry of the parent replaced an aborted "
                                               "child for this item.")
    text = serializers.CharField(help_text="All of it in words: \"child 7 of process 1f3c… (t_fan_out), step 2 "
                                           "'Work on every item'\".")

    def get_url(self, link: Any) -> str:
        return absolute(self, reverse("process-detail", args=[link.process_id]))


class ChildSerializer(serializers.Serializer):
    """One item of a children step: its child of the latest round."""

    item = serializers.IntegerField(help_text="The item's number in the step's list, from 1 (child_index + 1).")
    id = serializers.UUIDField(source="process_id")
    url = serializers.SerializerMethodField(help_text="The child's detail.")
    workflow = serializers.CharField()
    status = serializers.ChoiceField(choices=ProcessStatus.choices)
    round = serializers.IntegerField(help_text="1; one more each time a retry of the parent replaced an aborted "
                                               "child for this item.")
    failed_reason = serializers.CharField(help_text="Why the child failed, waits to be retried or was aborted; "
                                                    "empty otherwise.")

    def get_url(self, row: Any) -> str:
        return absolute(self, reverse("process-detail", args=[row.process_id]))


class ChildrenStepSerializer(serializers.Serializer):
    """The children one step of the process started, counted per status (each item's latest round)."""

    step = serializers.IntegerField(source="number", help_text="The step's number in the workflow, from 1.")
    step_name = serializers.CharField(source="name")
    current = serializers.BooleanField(help_text="Whether the process is at this step.")
    workflow = serializers.CharField(help_text="The children's workflow; empty for parallel branches (each its own).")
    count = serializers.IntegerField(source="total", help_text="Items: one child each, of its latest round.")
    counts = serializers.DictField(child=serializers.IntegerField(),
                                   help_text="Children per status (each item's latest round); zeros left out.")
    summary = serializers.CharField(help_text="The counts in words: \"46 completed, 1 failed, 1 running\".")
    replaced = serializers.IntegerField(help_text="Children of earlier rounds: aborted, and replaced by a retry of "
                                                  "the process (not counted above).")
    children = ChildSerializer(
        source="rows", many=True,
        help_text=f"In item order: the first {CHILDREN_SHOWN} items, then later ones that need a human (failed, "
                  f"waiting...: at most {ATTENTION_SHOWN} of each status).")
    more = serializers.IntegerField(help_text="Items not listed here; `all_url` lists every child.")


class ChildrenSerializer(serializers.Serializer):
    """A parent's children, per step that started any, and what it waits for."""

    waiting = serializers.CharField(
        allow_null=True,
        help_text="What an awaiting_children process waits for, naming the children that stop it and why: "
                  "\"waiting for 48 children of modify_port: 46 completed, 1 failed, 1 running; item 7 (process "
                  "1f3c…) failed: … — retry or skip that child to let this process go on\"; null otherwise.")
    count = serializers.IntegerField(source="total", help_text="Items of every step (latest rounds).")
    steps = ChildrenStepSerializer(many=True, help_text="Oldest step first.")
    all_url = serializers.SerializerMethodField(help_text="The process list of every child of this process (all "
                                                          "rounds), paginated: `?parent=`.")

    def get_all_url(self, children: Any) -> str:
        return absolute(self, f"{reverse('process-list')}?parent={self.context['process_id']}")

    def to_representation(self, children: Any) -> dict[str, Any]:
        data = super().to_representation(children)
        data["waiting"] = children.waiting or None
        return data


class ProcessDetailSerializer(ProcessListItemSerializer):
    steps = ProcessStepSerializer(source="step_rows", many=True, read_only=True,
                                  help_text="The newest steps (at most STEPS_PAGE_SIZE, 50 by default), oldest first, "
                                            "each with what it changed; `earlier_steps` pages back to the others.")
    steps_count = serializers.IntegerField(read_only=True, help_text="How many rows the step log holds in all.")
    earlier_steps = serializers.CharField(read_only=True, allow_null=True,
                                          help_text="The page of steps before those shown; null when all are shown.")
    pending_steps = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="Names of the steps still to run, from the current one; empty once completed or aborted.",
    )
    form = PendingFormSerializer(read_only=True, allow_null=True,
                                 help_text="The input a suspended process waits for; null otherwise.")
    current_state = serializers.DictField(read_only=True)
    run = RunSerializer(source="run_record", read_only=True, allow_null=True,
                        help_text="Its run record while it runs or waits for a worker; null otherwise.")
    waiting_for = WaitingForSerializer(
        read_only=True, allow_null=True,
        help_text="What an awaiting_callback process awaits (step, since, deadline, progress messages), or what timer "
                  "a waiting process waits for (step, until); null otherwise.")
    subscription_delta = SubscriptionDeltaSerializer(
        read_only=True, allow_null=True,
        help_text="What a modify or terminate changed on its subscription: each field, old and new value; null "
                  "for processes that take no subscription (creates, validations, tasks).")
    child_of = ChildOfSerializer(read_only=True, allow_null=True,
                                 help_text="A child process: its parent and the parent's step that started it; null "
                                           "for a top-level process.")
    children = ChildrenSerializer(
        source="family", read_only=True, allow_null=True,
        help_text="A parent: its children per step that started any, each step with its counts per status and "
                  "summary, and the children listed (capped: `more` says how many are not, `all_url` lists them "
                  "all); null for a process that started no child.")

    class Meta(ProcessListItemSerializer.Meta):
        fields = [*ProcessListItemSerializer.Meta.fields, "next_retry_at", "steps", "steps_count", "earlier_steps",
                  "pending_steps", "form",
                  "current_state", "run", "waiting_for", "subscription_delta", "child_of", "children"]
        read_only_fields = fields


class StatusCountsSerializer(serializers.Serializer):
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Number of processes per status "
                                                                               "(every status, zeros included).")
