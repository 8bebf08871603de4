"""The process commands: happy paths, one-line refusals that change nothing, and the node cycle end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from processes.models import EngineSettings, InputState, Process, ProcessStep, ProcessSubscription
from subscriptions.models import Subscription, SubscriptionLifecycleEvent
from tests.factories import ProcessFactory, WorkflowFactory
from workflows.dsl import StepList, begin, step
from workflows.node.demo import load_demo_products
from workflows.node.products import NodeProduct
from workflows.registry import task, unregister

PROCESS_ID = re.compile(r"process ([0-9a-f-]{36}) ")
FAILING_TASK = "t_cmd_failing_task"


# --- helpers -----------------------------------------------------------------------------------------
def run(*args: str, **options: object) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def snapshot() -> dict[str, int]:
    """What a refused command must not change."""
    return {
        "processes": Process.objects.count(),
        "steps": ProcessStep.objects.count(),
        "inputs": InputState.objects.count(),
        "links": ProcessSubscription.objects.count(),
        "subscriptions": Subscription.objects.count(),
        "lifecycle events": SubscriptionLifecycleEvent.objects.count(),
        "in sync": Subscription.objects.filter(insync=True).count(),
    }


def refused(*args: str, **options: object) -> str:
    """Run a command that must refuse: one line, no change to the database. Returns the message."""
    before = snapshot()
    with pytest.raises(CommandError) as excinfo:
        run(*args, **options)
    message = str(excinfo.value)
    assert message.strip(), "a refusal must say why"
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert snapshot() == before, f"{' '.join(args)} was refused but changed the database"
    return message


def process_id(output: str) -> str:
    match = PROCESS_ID.search(output)
    assert match, f"no process id in {output!r}"
    return match.group(1)


def node_input(name: str, **extra: object) -> dict[str, object]:
    return {"product": "Node", "customer_id": "customer-7", "node_name": name, "node_role": "core",
            "inventory_id": 17, **extra}


def create_node(name: str, **options: object) -> tuple[str, str]:
    """Run create_node from the command line; return (process id, subscription id)."""
    output = run("start_workflow", "create_node", input=json.dumps(node_input(name)), **options)
    assert ": completed" in output, output
    pid = process_id(output)
    link = ProcessSubscription.objects.get(process_id=pid)
    return pid, str(link.subscription_id)


def steps_of(pid: str) -> list[tuple[str, str]]:
    return list(ProcessStep.objects.filter(process_id=pid).order_by("id").values_list("name", "status"))


@pytest.fixture
def products(db):
    load_demo_products()


@pytest.fixture
def failing_task():
    """A task whose only step raises; forgotten after the test."""

    @step("Explode")
    def explode() -> None:
        raise RuntimeError("the external system said no")

    @task("Command test: a task that fails", name=FAILING_TASK)
    def failing() -> StepList:
        return begin >> explode

    yield failing
    unregister(FAILING_TASK)


# --- the node cycle, end to end -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_node_create_modify_validate_terminate_cycle(products, tmp_path):
    # create, with the input from a file
    input_file = tmp_path / "create.json"
    input_file.write_text(json.dumps(node_input("rt-cycle-1")))
    output = run("start_workflow", "create_node", input_file=str(input_file), user="alice")
    assert ": completed" in output
    create_pid = process_id(output)
    sub_id = str(ProcessSubscription.objects.get(process_id=create_pid).subscription_id)
    subscription = Subscription.objects.get(pk=sub_id)
    assert (subscription.status, subscription.insync) == ("active", True)
    assert subscription.description == "Node rt-cycle-1"
    node = NodeProduct.load(sub_id).node
    assert (node.node_name, str(node.node_role), node.inventory_id) == ("rt-cycle-1", "core", 17)
    assert node.ipv4_loopback is not None

    # modify: suspends at its input step, holding the subscription
    output = run("start_workflow", "modify_node", subscription=sub_id, user="bob")
    modify_pid = process_id(output)
    assert ": suspended" in output
    assert f"resume_process {modify_pid}" in output
    assert "Ask for the new node name" in output
    assert Process.objects.get(pk=modify_pid).status == "suspended"
    assert not Subscription.objects.get(pk=sub_id).insync

    shown = run("show_process", modify_pid)
    assert "to run: Ask for the new node name → Rename node in IPAM" in shown
    assert ("waiting for input at 'Ask for the new node name'; current values: "
            '{"node_name": "rt-cycle-1", "node_role": "core"}') in shown
    schema_line = next(line for line in shown.splitlines() if line.startswith("form (JSON Schema): "))
    schema = json.loads(schema_line.removeprefix("form (JSON Schema): "))
    assert (set(schema["properties"]), schema["required"]) == ({"node_name", "node_role"}, ["node_name"])

    # invalid input is refused and changes nothing
    message = refused("resume_process", modify_pid, input='{"node_name": "Not A Host!"}')
    assert "node_name" in message
    message = refused("resume_process", modify_pid, input='{"node_name": "rt-cycle-2", "colour": "red"}')
    assert "colour" in message
    refused("resume_process", modify_pid, input='{"node_name": ')
    assert "give the input" in refused("resume_process", modify_pid)
    assert "it is suspended" in refused("retry_process", modify_pid)  # it waits for input, not a retry
    assert Process.objects.get(pk=modify_pid).status == "suspended"
    assert NodeProduct.load(sub_id).node.node_name == "rt-cycle-1"

    # valid input completes it
    output = run("resume_process", modify_pid, input='{"node_name": "rt-cycle-2", "node_role": "edge"}', user="carol")
    assert f"resumed process {modify_pid} (modify_node): completed" in output
    node = NodeProduct.load(sub_id).node
    assert (node.node_name, str(node.node_role)) == ("rt-cycle-2", "edge")
    subscription = Subscription.objects.get(pk=sub_id)
    assert (subscription.status, subscription.insync, subscription.description) == ("active", True, "Node rt-cycle-2")
    resume_input = InputState.objects.get(process_id=modify_pid, input_type="user_input")
    assert (resume_input.input, resume_input.created_by) == ({"node_name": "rt-cycle-2", "node_role": "edge"}, "carol")
    assert steps_of(modify_pid)[-1] == ("Done", "complete")

    # validate: the loopback still matches IPAM after the rename
    output = run("start_workflow", "validate_node", subscription=sub_id)
    assert "(validate_node): completed" in output

    # terminate
    output = run("start_workflow", "terminate_node", subscription=sub_id, user="dave")
    assert "(terminate_node): completed" in output
    terminate_pid = process_id(output)
    subscription = Subscription.objects.get(pk=sub_id)
    assert (subscription.status, subscription.insync) == ("terminated", True)
    assert subscription.end_date is not None

    # the lifecycle history shows every transition with the process that made it, and who
    history = list(
        SubscriptionLifecycleEvent.objects.filter(subscription_id=sub_id)
        .order_by("changed_at", "id")
        .values_list("transition", "from_status", "to_status", "process_id", "changed_by")
    )
    assert [(t, f, to, str(p), by) for t, f, to, p, by in history] == [
        ("provision", "initial", "provisioning", create_pid, "alice"),
        ("activate", "provisioning", "active", create_pid, "alice"),
        ("terminate", "active", "terminated", terminate_pid, "dave"),
    ]

    # every process of the subscription is listed against it
    listed = run("list_processes", subscription=sub_id)
    assert "4 of 4 processes." in listed
    for name in ("create_node", "modify_node", "validate_node", "terminate_node"):
        assert name in listed

    # a terminated subscription cannot be modified
    message = refused("start_workflow", "modify_node", subscription=sub_id)
    assert "terminated" in message


@pytest.mark.django_db(transaction=True)
def test_a_failed_step_is_shown_then_retried_to_completion(products):
    _, sub_id = create_node("rt-fail-1")
    model = NodeProduct.load(sub_id)
    good_loopback = model.node.ipv4_loopback
    model.node.ipv4_loopback = IPv4Address("192.0.2.66")  # tampered: IPAM disagrees now
    model.save()

    output = run("start_workflow", "validate_node", subscription=sub_id, user="erin")

    pid = process_id(output)
    assert f"started process {pid} (validate_node): failed" in output
    assert "reason: Check loopback against IPAM: node rt-fail-1: the subscription says loopback 192.0.2.66" in output
    assert f"see:    manage.py show_process {pid}" in output
    process = Process.objects.get(pk=pid)
    assert process.status == "failed"
    assert steps_of(pid) == [
        ("Start", "success"), ("Link subscription to process", "success"),
        ("Check loopback against IPAM", "failed"),
    ]

    shown = run("show_process", pid)
    assert f"process    {pid}" in shown
    assert "workflow   validate_node (validate): Validate node" in shown
    assert "status     failed" in shown
    assert f"subscription {sub_id}" in shown
    rows = {line.split()[1]: line for line in shown.splitlines() if re.match(r"\s+\d+\s+\S", line)}
    assert set(rows) == {"Start", "Link", "Check"}
    assert "success" in rows["Start"] and "erin" in rows["Start"]
    assert re.search(r"failed\s+\S+ \S+\s+\d+\.\d{3}s\s+erin\s+1$", rows["Check"]), rows["Check"]
    assert "error: ValueError: node rt-fail-1: the subscription says loopback 192.0.2.66, IPAM says" in shown
    assert "to run: Check loopback against IPAM → Done" in shown
    assert "Traceback" not in shown
    assert "Traceback (most recent call last)" in run("show_process", pid, tracebacks=True)
    assert '"subscription_id"' in run("show_process", pid, state=True)

    # a validation never takes the subscription, failed or not; but one is open: no second one starts
    assert Subscription.objects.get(pk=sub_id).insync
    message = refused("start_workflow", "validate_node", subscription=sub_id)
    assert f"validate_node is already running on subscription {sub_id}: process {pid} is failed" in message

    # fix the cause, then retry: it runs again from the failed step and completes
    model = NodeProduct.load(sub_id)
    model.node.ipv4_loopback = good_loopback
    model.save()
    output = run("retry_process", pid, user="frank")
    assert f"retried process {pid} (validate_node): completed" in output
    assert steps_of(pid)[2:] == [
        ("Check loopback against IPAM", "failed"), ("Check loopback against IPAM", "success"),
        ("Done", "complete"),
    ]
    assert ProcessStep.objects.filter(process_id=pid, name="Check loopback against IPAM").latest("id").attempt == 2
    assert Subscription.objects.get(pk=sub_id).insync

    shown = run("show_process", pid)
    assert "status     completed" in shown
    assert "to run" not in shown

    # a completed process can be neither retried, resumed nor aborted
    assert "it is completed" in refused("retry_process", pid)
    assert "it is completed, not suspended" in refused("resume_process", pid, input="{}")
    assert "already completed" in refused("abort_process", pid)


@pytest.mark.django_db(transaction=True)
def test_list_processes_filters_by_status_and_pages(products, failing_task):
    failed = []
    for _ in range(3):
        output = run("start_workflow", FAILING_TASK)
        assert "failed" in output
        assert "reason: Explode: the external system said no" in output
        failed.append(process_id(output))
    completed = process_id(run("start_workflow", "task_check_products"))
    assert Process.objects.get(pk=completed).status == "completed"

    first = run("list_processes", status=["failed"], limit=2)
    second = run("list_processes", status=["failed"], limit=2, offset=2)

    def listed(output: str) -> list[str]:
        return [line.split()[0] for line in output.splitlines() if re.match(r"[0-9a-f-]{36} ", line)]

    assert len(listed(first)) == 2
    assert first.strip().endswith("2 of 3 processes; next page: --offset 2.")
    assert len(listed(second)) == 1
    assert second.strip().endswith("1 of 3 processes.")
    assert sorted(listed(first) + listed(second)) == sorted(failed)
    assert completed not in first + second
    for line in first.splitlines()[:2]:
        assert FAILING_TASK in line and "failed" in line and "the external system said no" in line

    everything = run("list_processes")
    assert set(listed(everything)) == {*failed, completed}
    assert "4 of 4 processes." in everything
    assert listed(run("list_processes", status=["completed"])) == [completed]
    assert set(listed(run("list_processes", status=["completed", "failed"]))) == {*failed, completed}
    assert listed(run("list_processes", workflow="task_check_products")) == [completed]
    assert "0 of 0 processes." in run("list_processes", status=["suspended"])
    assert "0 of 3 processes." in run("list_processes", status=["failed"], offset=10)

    shown = run("show_process", failed[0])
    assert "Explode" in shown
    assert "error: RuntimeError: the external system said no" in shown

    # aborting a failed process ends it for good
    output = run("abort_process", failed[0], reason="not needed any more", user="gina")
    assert f"aborted process {failed[0]} ({FAILING_TASK}): aborted" in output
    assert "aborted by gina: not needed any more" in run("show_process", failed[0])
    assert listed(run("list_processes", status=["aborted"])) == [failed[0]]
    assert "2 of 2 processes." in run("list_processes", status=["failed"])
    assert "already aborted" in refused("abort_process", failed[0])
    assert "it is aborted" in refused("retry_process", failed[0])


@pytest.mark.django_db(transaction=True)
def test_a_process_of_a_workflow_removed_from_the_code_can_still_be_shown(failing_task):
    pid = process_id(run("start_workflow", FAILING_TASK))
    unregister(FAILING_TASK)
    assert f"removed  {FAILING_TASK}" in run("sync_workflows")

    shown = run("show_process", pid)

    assert f"workflow   {FAILING_TASK} (system): Command test: a task that fails" in shown
    assert "no longer in the code" in shown
    assert "error: RuntimeError: the external system said no" in shown
    assert "to run: Explode → Done" in shown
    assert pid in run("list_processes", workflow=FAILING_TASK)
    # it cannot run again, and says why in one line
    assert f"workflow {FAILING_TASK} was removed from code" in refused("retry_process", pid)


@pytest.mark.django_db
def test_list_processes_counts_no_further_than_the_list_count_limit(settings):
    settings.ORCHESTRATOR = {"LIST_COUNT_LIMIT": 3}
    ProcessFactory.create_batch(7, workflow=WorkflowFactory(name="t_many"))

    assert run("list_processes", limit=2).strip().endswith("2 of at least 3 processes; next page: --offset 2.")
    assert run("list_processes", limit=2, offset=4).strip().endswith(
        "2 of at least 7 processes; next page: --offset 6.")
    assert run("list_processes", limit=2, offset=6).strip().endswith("1 of 7 processes.")


@pytest.mark.django_db(transaction=True)
def test_aborting_a_suspended_process_leaves_its_subscription_visibly_out_of_sync(products):
    _, sub_id = create_node("rt-abort-1")
    pid = process_id(run("start_workflow", "modify_node", subscription=sub_id))

    output = run("abort_process", pid, reason="customer cancelled")

    assert f"aborted process {pid} (modify_node): aborted" in output
    assert steps_of(pid)[-1] == ("Abort", "abort")
    assert not Subscription.objects.get(pk=sub_id).insync
    assert "it is aborted, not suspended" in refused("resume_process", pid, input='{"node_name": "rt-abort-2"}')
    assert NodeProduct.load(sub_id).node.node_name == "rt-abort-1"
    message = refused("start_workflow", "modify_node", subscription=sub_id)
    assert "out of sync" in message


# --- refusals: one line, nothing written ------------------------------------------------------------
db_only = pytest.mark.django_db


@db_only
def test_start_refuses_an_unknown_workflow():
    message = refused("start_workflow", "nope")

    assert "unknown workflow 'nope'" in message
    assert "create_node" in message  # says what it could have been


@db_only
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"node_name": ', "--input is not valid JSON"),
        ("node_name=rt1", "--input is not valid JSON"),
        ('["rt1"]', "--input must be a JSON object"),
        ('"rt1"', "--input must be a JSON object"),
    ],
)
def test_start_refuses_malformed_json(products, raw, expected):
    assert expected in refused("start_workflow", "create_node", input=raw)


@db_only
def test_start_refuses_a_missing_or_malformed_input_file(products, tmp_path):
    assert "cannot read input file" in refused("start_workflow", "create_node", input_file=str(tmp_path / "missing"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert f"{bad} is not valid JSON" in refused("start_workflow", "create_node", input_file=str(bad))


@db_only
def test_start_refuses_invalid_form_input_naming_the_fields(products):
    message = refused(
        "start_workflow", "create_node",
        input=json.dumps(node_input("Bad Name!", node_role="spine", inventory_id="x", colour="red")),
    )

    for name in ("node_name", "node_role", "inventory_id", "colour"):
        assert name in message
    assert "product:" not in message  # the product was fine

    message = refused("start_workflow", "create_node", input=json.dumps({**node_input("rt1"), "product": "Link"}))
    assert "unknown product 'Link'" in message
    assert "choose one of: Node" in message
    assert "customer_id" in refused("start_workflow", "create_node", input='{"product": "Node"}')


@db_only
def test_start_refuses_a_missing_unknown_or_unexpected_subscription(products, active_port):
    assert "give the subscription's id" in refused("start_workflow", "modify_node", input="{}")
    assert "does not exist" in refused(
        "start_workflow", "modify_node", subscription="00000000-0000-0000-0000-000000000000"
    )
    assert "does not exist" in refused("start_workflow", "modify_node", subscription="not-a-uuid")
    assert "does not serve product Port 10G" in refused(
        "start_workflow", "modify_node", subscription=str(active_port.pk)
    )
    assert "takes no subscription" in refused(
        "start_workflow", "create_node", subscription=str(active_port.pk), input=json.dumps(node_input("rt1"))
    )


@db_only
def test_start_refuses_while_the_engine_is_paused(products):
    EngineSettings.objects.update_or_create(id=1, defaults={"paused": True})

    assert "engine is paused" in refused("start_workflow", "create_node", input=json.dumps(node_input("rt1")))


@db_only
@pytest.mark.parametrize("command", ["show_process", "retry_process", "abort_process", "resume_process"])
@pytest.mark.parametrize("pid", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_process_commands_refuse_an_unknown_process(command, pid):
    options = {"input": "{}"} if command == "resume_process" else {}

    assert f"process {pid} does not exist" in refused(command, pid, **options)


@db_only
def test_list_processes_refuses_an_unknown_status_or_a_bad_page():
    message = refused("list_processes", status=["broken"])
    assert "unknown status broken" in message
    assert "failed" in message
    assert "--limit" in refused("list_processes", limit=0)
    assert "--offset" in refused("list_processes", offset=-1)
    assert "'not-a-uuid' is not a subscription id" in refused("list_processes", subscription="not-a-uuid")


@db_only
def test_list_workflows_shows_targets_products_and_input_fields():
    output = run("list_workflows", steps=True)

    lines = output.splitlines()
    create = next(i for i, line in enumerate(lines) if line.startswith("create_node "))
    assert "create" in lines[create] and "Create node" in lines[create]
    # The input fields in the order a user fills them in: product and customer first; ? marks optional ones.
    assert lines[create + 1].strip() == (
        "products: Node; input: product, customer_id, description?, node_name, node_role, inventory_id"
    )
    assert "1. Start (step)" in output
    assert "Ask for the new node name (input)" in output
    note = next(line for line in lines if line.startswith("modify_note "))
    assert "(usable while out of sync)" in note
    assert re.search(r"^\d+ workflows\.$", lines[-1])


# --- a real command line: exit status and one line on stderr -----------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["start_workflow", "nope"], "unknown workflow 'nope'"),
        (["start_workflow", "create_node", "--input", "{bad"], "--input is not valid JSON"),
        (["start_workflow", "create_node", "--input", "[" * 20000 + "]" * 20000],
         "--input is nested too deeply: at most 32 levels of arrays and objects are accepted"),
    ],
    ids=["unknown-workflow", "malformed-json", "40kB-of-brackets"],
)
def test_a_refusal_on_the_command_line_exits_non_zero_with_one_line(tmp_path, args, expected):
    # Its own, empty database: these refusals must come before any database access.
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}", "DJANGO_ENV": "development"}
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(settings.BASE_DIR), env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert result.stdout == ""


BAD_NUMBERS = {
    "limit-1e20": (["list_processes", "--limit", "1e20"],
                   "argument --limit: must be a whole number from 1 to 10000, not '1e20'"),
    "limit-abc": (["list_processes", "--limit", "abc"],
                  "argument --limit: must be a whole number from 1 to 10000, not 'abc'"),
    "limit-20-digits": (["list_processes", "--limit", "99999999999999999999"],
                        "argument --limit: must be a whole number from 1 to 10000, not '99999999999999999999'"),
    "offset-negative": (["list_processes", "--offset", "-1"],
                        "argument --offset: must be a whole number from 0 to 9223372036854775807, not '-1'"),
    "offset-20-digits": (["list_processes", "--offset", "99999999999999999999"],
                         "argument --offset: must be a whole number from 0 to 9223372036854775807, "
                         "not '99999999999999999999'"),
    "bench-processes-1e20": (["bench_engine", "--processes", "1e20"],
                             "argument --processes: must be a whole number from 1 to 1000000, not '1e20'"),
    "bench-steps-20-digits": (["bench_engine", "--steps", "99999999999999999999"],
                              "argument --steps: must be a whole number from 1 to 1000, not '99999999999999999999'"),
    "bench-timeout-nan": (["bench_engine", "--timeout", "nan"],
                          "argument --timeout: must be a number of seconds above 0 and at most 86400, not 'nan'"),
    "scheduler-interval-negative": (["run_scheduler", "--interval", "-1"],
                                    "argument --interval: must be a number of seconds above 0 and at most 86400, "
                                    "not '-1'"),
    "worker-concurrency-0": (["run_worker", "--concurrency", "0"],
                             "argument --concurrency/-c: must be a whole number from 1 to 1024, not '0'"),
}


@pytest.mark.parametrize("case", list(BAD_NUMBERS))
def test_a_bad_number_argument_is_refused_with_its_range(case):
    args, expected = BAD_NUMBERS[case]

    with pytest.raises(CommandError) as excinfo:
        call_command(*args, stdout=StringIO(), stderr=StringIO())

    assert str(excinfo.value) == f"Error: {expected}"


@pytest.mark.parametrize("case", ["limit-1e20", "offset-20-digits", "bench-steps-20-digits", "worker-concurrency-0"])
def test_a_bad_argument_on_the_command_line_is_one_line_and_exit_status_2(tmp_path, case):
    args, expected = BAD_NUMBERS[case]
    # Its own, empty database: arguments are refused before anything else happens.
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}", "DJANGO_ENV": "development"}
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(settings.BASE_DIR), env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    # argparse would print the whole usage first: a dozen lines of Django's common options.
    assert result.stderr.splitlines() == [f"manage.py {args[0]}: error: {expected} (see --help)"]


@db_only
def test_list_processes_refuses_an_out_of_range_page_passed_directly_or_as_arguments():
    # call_command(limit=...) skips argparse's types: the command checks the same bounds itself.
    assert refused("list_processes", limit=10**20) == (
        "--limit must be a whole number from 1 to 10000, not 100000000000000000000")
    assert refused("list_processes", offset=-1) == (
        "--offset must be a whole number from 0 to 9223372036854775807, not -1")
    assert refused("list_processes", "--limit", "1e20") == (
        "Error: argument --limit: must be a whole number from 1 to 10000, not '1e20'")
    assert run("list_processes", offset=2**63 - 1).strip() == "0 of 0 processes."
