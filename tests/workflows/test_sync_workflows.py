"""`manage.py sync_workflows` (and the post_migrate hook) keeps the Workflow rows in step with the code."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from subscriptions.models import Product
from workflows.dsl import StepList, begin, step
from workflows.models import Workflow
from workflows.node.demo import load_demo_products
from workflows.registry import all_workflows, modify_workflow, task, unregister

BUILTIN = {"create_node", "modify_node", "terminate_node", "validate_node", "modify_note",
           "modify_subscription_details", "task_check_products"}
NAME = "t_sync_port_check"

pytestmark = pytest.mark.django_db


@step("Look at the port")
def look_at_port() -> None:
    return None


def declare(description: str = "Sync test: check a port", product_types: tuple[str, ...] = ("Port",)) -> None:
    @modify_workflow(description, name=NAME, product_types=list(product_types))
    def port_check() -> StepList:
        return begin >> look_at_port


@pytest.fixture
def test_workflow():
    """Declares the test workflow on demand; it is forgotten after the test whatever happened."""
    yield declare
    unregister(NAME)


def sync() -> str:
    out = StringIO()
    call_command("sync_workflows", stdout=out)
    return out.getvalue()


def lines_for(output: str, name: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if f" {name}" in line]


def test_builtin_workflow_rows_exist_after_migrate():
    rows = {row.name: row for row in Workflow.objects.filter(name__in=BUILTIN)}

    assert set(rows) == BUILTIN
    assert all(row.deleted_at is None for row in rows.values())
    assert rows["create_node"].target == "create"
    assert rows["create_node"].description == "Create node"
    assert rows["task_check_products"].is_task
    assert not rows["modify_note"].is_task


def test_migrate_recreates_missing_workflow_rows():
    Workflow.objects.filter(name__in=BUILTIN).delete()

    call_command("migrate", verbosity=0)

    assert set(Workflow.objects.filter(name__in=BUILTIN, deleted_at=None).values_list("name", flat=True)) == BUILTIN


def test_running_twice_says_nothing_changed():
    sync()
    rows = list(Workflow.objects.order_by("name").values_list("name", "description", "deleted_at"))

    output = sync()

    assert "nothing changed" in output
    assert list(Workflow.objects.order_by("name").values_list("name", "description", "deleted_at")) == rows


def test_a_new_workflow_is_added_with_links_to_the_products_of_its_types(test_workflow):
    load_demo_products()
    sync()
    test_workflow()

    output = sync()

    assert lines_for(output, NAME) == [f"added    {NAME}"]
    assert "1 added, 0 changed, 0 removed" in output
    row = Workflow.objects.get(name=NAME)
    assert (row.target, row.description, row.deleted_at) == ("modify", "Sync test: check a port", None)
    assert set(row.products.values_list("name", flat=True)) == {"Port 10G", "Port 100G"}
    assert "nothing changed" in sync()


def test_a_changed_description_is_reported_as_changed(test_workflow):
    test_workflow()
    sync()
    test_workflow(description="Sync test: check a port, thoroughly")

    output = sync()

    [line] = lines_for(output, NAME)
    assert line.startswith(f"changed  {NAME}")
    assert "Sync test: check a port, thoroughly" in line
    assert "0 added, 1 changed, 0 removed" in output
    assert Workflow.objects.get(name=NAME).description == "Sync test: check a port, thoroughly"


def test_changed_product_types_relink_the_products(test_workflow):
    load_demo_products()
    test_workflow()
    sync()
    test_workflow(product_types=("Port", "Link"))

    output = sync()

    [line] = lines_for(output, NAME)
    assert line.startswith(f"changed  {NAME}")
    assert "products: 2 → 3" in line
    assert set(Workflow.objects.get(name=NAME).products.values_list("name", flat=True)) == {
        "Port 10G", "Port 100G", "Link",
    }


def test_products_created_after_a_sync_are_linked_and_reported():
    # `migrate` syncs before any product exists (a fresh install); loading the catalogue afterwards must
    # link the node workflows to the Node product on the next sync, and say so.
    Product.objects.all().delete()
    sync()
    assert not Workflow.objects.get(name="create_node").products.exists()
    load_demo_products()

    output = sync()

    node_workflows = ["create_node", "modify_node", "terminate_node", "validate_node"]
    for name in node_workflows:
        [line] = lines_for(output, name)
        assert line.startswith(f"changed  {name}")
        assert "products: 0 → 1" in line
        assert list(Workflow.objects.get(name=name).products.values_list("name", flat=True)) == ["Node"]


def test_a_workflow_removed_from_the_code_is_kept_and_marked_deleted_then_restored(test_workflow):
    test_workflow()
    sync()
    row_id = Workflow.objects.get(name=NAME).pk
    unregister(NAME)

    output = sync()

    assert lines_for(output, NAME) == [f"removed  {NAME} (kept for its processes, marked deleted)"]
    assert "0 added, 0 changed, 1 removed" in output
    row = Workflow.objects.get(name=NAME)
    assert row.pk == row_id
    assert row.deleted_at is not None
    assert NAME not in Workflow.objects.active().values_list("name", flat=True)
    assert "nothing changed" in sync()  # removed once, not again

    test_workflow()
    output = sync()

    [line] = lines_for(output, NAME)
    assert line.startswith(f"changed  {NAME}")
    assert "restored" in line
    row = Workflow.objects.get(name=NAME)
    assert row.pk == row_id
    assert row.deleted_at is None


def test_a_new_task_is_added_as_a_task():
    name = "t_sync_a_task"

    @task("Sync test: a task", name=name)
    def a_task() -> StepList:
        return begin >> look_at_port

    try:
        output = sync()
    finally:
        unregister(name)

    assert lines_for(output, name) == [f"added    {name}"]
    row = Workflow.objects.get(name=name)
    assert (row.target, row.is_task) == ("system", True)
    assert name not in all_workflows()
