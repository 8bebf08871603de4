"""A status change is checked like any other write: into a strict status only with a valid domain model.

Every path into `active` (and the other strict statuses) — a transition and save, change_lifecycle, a
create workflow's set_active step — validates the subscription's typed domain model in the new status
and refuses an incomplete one field by field, writing nothing. `terminate` keeps an agreed end date.
Uses the demo node catalogue; NodeBlock requires node_name, node_role and inventory_id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from django.utils import timezone

from processes.models import ProcessStep
from processes.services import retry_process, start_process
from subscriptions.errors import DomainModelError
from subscriptions.models import Product, Subscription, SubscriptionInstanceValue, SubscriptionLifecycle
from subscriptions.services import change_lifecycle
from tests.factories import ProductFactory, SubscriptionFactory
from workflows.dsl import State, StepList, begin, step
from workflows.node.demo import load_demo_products
from workflows.node.products import NodeProduct
from workflows.registry import create_workflow, unregister

S = SubscriptionLifecycle
NAME_MISSING = {"node.node_name": ["required while the subscription is active (value: None)"]}


# --- fixtures and helpers ----------------------------------------------------------------------------
@pytest.fixture
def catalogue(db) -> dict[str, Product]:
    load_demo_products()
    return {product.name: product for product in Product.objects.all()}


def make_node(catalogue: dict[str, Product], *, node_name: str | None = "rtr-1") -> Subscription:
    """A provisioning Node, as a create workflow's body leaves it: complete, or without a name."""
    model = NodeProduct.new(catalogue["Node"], "customer-1", "node rtr-1")
    model.node.node_name = node_name
    model.node.node_role = "core"
    model.node.inventory_id = 42
    model.subscription.provision(by="factory")
    model.save()  # provisioning is not strict: an empty required field is still allowed
    return Subscription.objects.get(pk=model.subscription.pk)


def stored(subscription: Subscription) -> tuple[str, int, list[str], dt.datetime | None]:
    """What the database holds: status, version, lifecycle history and start date."""
    row = Subscription.objects.get(pk=subscription.pk)
    return row.status, row.version, [e.transition for e in row.lifecycle_events.all()], row.start_date


def activate(subscription: Subscription) -> None:
    subscription.activate(by="alice")
    subscription.save()


def transition_to_active(subscription: Subscription) -> None:
    subscription.transition_to(S.ACTIVE, by="alice")
    subscription.save()


def change_lifecycle_to_active(subscription: Subscription) -> None:
    change_lifecycle(subscription.pk, S.ACTIVE, by="alice")


PATHS: dict[str, Callable[[Subscription], None]] = {
    "activate": activate,
    "transition_to": transition_to_active,
    "change_lifecycle": change_lifecycle_to_active,
}


def assert_names_block_field_and_value(refused: DomainModelError, subscription: Subscription,
                                       source: str, target: str) -> None:
    message = str(refused)
    assert "\n" not in message  # one line, for the process log, the API and the command line
    assert message.startswith(f"cannot move subscription {subscription.pk} from {source} to {target}: ")
    assert f"node.node_name: required while the subscription is {target} (value: None)" in message
    assert 400 <= refused.status_code < 500


# --- every path into active is checked -----------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_moving_a_node_without_name_to_active_is_refused_naming_block_field_and_value(catalogue, path):
    subscription = make_node(catalogue, node_name=None)
    before = stored(subscription)

    with pytest.raises(DomainModelError) as refused:
        PATHS[path](subscription)

    assert refused.value.errors == NAME_MISSING
    assert_names_block_field_and_value(refused.value, subscription, S.PROVISIONING, S.ACTIVE)
    # Nothing written: not the status, not the activate event, not the version, not the start date.
    assert stored(subscription) == before == (S.PROVISIONING, before[1], ["provision"], None)


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_moving_a_complete_node_to_active_passes(catalogue, path):
    subscription = make_node(catalogue)
    version = stored(subscription)[1]

    PATHS[path](subscription)

    status, new_version, history, start_date = stored(subscription)
    assert (status, new_version, history) == (S.ACTIVE, version + 1, ["provision", "activate"])
    assert start_date is not None


@pytest.mark.django_db
def test_every_missing_required_field_is_listed_and_optional_ones_are_not(catalogue):
    model = NodeProduct.new(catalogue["Node"], "customer-1", "an empty node")
    model.subscription.provision()
    model.save()
    subscription = Subscription.objects.get(pk=model.subscription.pk)

    with pytest.raises(DomainModelError) as refused:
        change_lifecycle(subscription.pk, S.ACTIVE)

    assert refused.value.errors == {
        f"node.{field}": ["required while the subscription is active (value: None)"]
        for field in ("node_name", "node_role", "inventory_id")
    }
    assert stored(subscription)[0] == S.PROVISIONING


@pytest.mark.django_db
def test_a_new_subscription_saved_straight_into_active_without_its_blocks_is_not_written(catalogue):
    subscription = Subscription(product=catalogue["Node"], customer_id="customer-1", description="no blocks")
    subscription.provision()
    subscription.activate()

    with pytest.raises(DomainModelError) as refused:
        subscription.save()

    assert refused.value.errors == {"node": ["required while the subscription is active (value: None)"]}
    assert not Subscription.objects.exists()


# The other transitions into a strict status (active, disabled and migrating by default), on a node
# that lost its name outside the domain model (written before this rule, or by an import).
INTO_STRICT = [
    ("enable", S.DISABLED, S.ACTIVE),
    ("finish_migration", S.MIGRATING, S.ACTIVE),
    ("disable", S.ACTIVE, S.DISABLED),
    ("start_migration", S.ACTIVE, S.MIGRATING),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "source", "target"), INTO_STRICT, ids=[m for m, _, _ in INTO_STRICT])
def test_every_transition_into_a_strict_status_checks_the_domain_model(catalogue, method, source, target):
    subscription = make_node(catalogue)
    change_lifecycle(subscription.pk, S.ACTIVE)
    if source != S.ACTIVE:
        change_lifecycle(subscription.pk, source)
    SubscriptionInstanceValue.objects.filter(
        subscription_instance__subscription=subscription, resource_type__resource_type="node_name"
    ).delete()
    subscription = Subscription.objects.get(pk=subscription.pk)
    before = stored(subscription)

    getattr(subscription, method)(by="alice")
    with pytest.raises(DomainModelError) as refused:
        subscription.save()

    assert refused.value.errors == {
        "node.node_name": [f"required while the subscription is {target} (value: None)"]
    }
    assert_names_block_field_and_value(refused.value, subscription, source, target)
    assert stored(subscription) == before


@pytest.mark.django_db
def test_terminating_a_node_without_name_is_not_checked(catalogue):
    subscription = make_node(catalogue, node_name=None)

    change_lifecycle(subscription.pk, S.TERMINATED, by="alice")

    assert stored(subscription)[0] == S.TERMINATED


@pytest.mark.django_db
def test_filling_in_the_field_and_activating_in_one_model_save_passes(catalogue):
    """The model validates what it is about to write; the rows still hold no name when the row is saved."""
    model = NodeProduct.load(make_node(catalogue, node_name=None).pk)

    model.node.node_name = "rtr-1"
    model.subscription.activate(by="alice")
    model.save()

    loaded = NodeProduct.load(model.subscription.pk)
    assert (loaded.status, loaded.node.node_name) == (S.ACTIVE, "rtr-1")
    assert stored(model.subscription)[2] == ["provision", "activate"]


@pytest.mark.django_db
def test_activating_through_the_model_without_the_field_is_refused_naming_its_value(catalogue):
    subscription = make_node(catalogue, node_name=None)
    model = NodeProduct.load(subscription.pk)
    before = stored(subscription)

    model.subscription.activate(by="alice")
    with pytest.raises(DomainModelError) as refused:
        model.save()

    assert refused.value.errors == NAME_MISSING
    assert "node.node_name: required while the subscription is active (value: None)" in str(refused.value)
    assert stored(subscription) == before


@pytest.mark.django_db
def test_a_product_without_a_domain_model_is_not_validated():
    product = ProductFactory(product_type="NoDomainModelForThis")

    subscription = SubscriptionFactory(product=product, lifecycle=S.ACTIVE)

    assert stored(subscription)[0] == S.ACTIVE


# --- the create workflow's set_active step ---------------------------------------------------------------
NAMELESS = "t_create_node_without_name"


@pytest.fixture
def nameless_create_workflow() -> Iterator[str]:
    """A create workflow whose body fills in everything but node_name; forgotten after the test."""

    @step("Construct node without a name")
    def construct_without_name(subscription: NodeProduct) -> State:
        subscription.node.node_role = "edge"
        subscription.node.inventory_id = 7
        return {"subscription": subscription}

    @create_workflow("Lifecycle test: create a node but forget its name", name=NAMELESS, product_types=["Node"])
    def create_without_name() -> StepList:
        return begin >> construct_without_name

    yield NAMELESS
    unregister(NAMELESS)


@pytest.mark.django_db(transaction=True)
def test_set_active_step_refuses_a_node_without_name_and_a_retry_after_the_fix_completes(
        nameless_create_workflow):
    load_demo_products()

    process = start_process(nameless_create_workflow, user_input={"product": "Node", "customer_id": "c-1"},
                            by="alice")

    assert process.status == "failed"
    failed = ProcessStep.objects.filter(process=process).order_by("id").last()
    assert (failed.name, failed.status, failed.error_type) == ("Set subscription active", "failed",
                                                               "DomainModelError")
    assert "node.node_name: required while the subscription is active (value: None)" in failed.error
    assert process.failed_reason.startswith("Set subscription active: cannot move subscription ")
    subscription = Subscription.objects.get(process_links__process=process)
    assert_names_block_field_and_value(
        DomainModelError(failed.error), subscription, S.PROVISIONING, S.ACTIVE
    )
    before = stored(subscription)
    assert before[0] == S.PROVISIONING and before[2:] == (["provision"], None)
    assert Subscription.objects.get(pk=subscription.pk).insync is False  # still held by the process

    # A retry without a fix fails the same way and changes nothing.
    assert retry_process(process.process_id, by="alice").status == "failed"
    assert stored(subscription) == before

    # Fixing the data lets the retry activate it and finish the workflow.
    model = NodeProduct.load(subscription.pk)
    model.node.node_name = "rtr-7"
    model.save()
    assert retry_process(process.process_id, by="alice").status == "completed"
    status, _, history, start_date = stored(subscription)
    assert (status, history) == (S.ACTIVE, ["provision", "activate"]) and start_date is not None
    assert Subscription.objects.get(pk=subscription.pk).insync is True


# --- terminate and the end date --------------------------------------------------------------------------
@pytest.mark.django_db
def test_terminate_keeps_an_end_date_that_was_already_set():
    agreed = timezone.now() + dt.timedelta(days=30)
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE, end_date=agreed)

    change_lifecycle(subscription.pk, S.TERMINATED, by="alice")

    row = Subscription.objects.get(pk=subscription.pk)
    assert (row.status, row.end_date) == (S.TERMINATED, agreed)


@pytest.mark.django_db
def test_terminate_sets_the_end_date_when_there_is_none():
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE)
    started = timezone.now()

    change_lifecycle(subscription.pk, S.TERMINATED, by="alice")

    row = Subscription.objects.get(pk=subscription.pk)
    assert row.status == S.TERMINATED
    assert started <= row.end_date <= timezone.now()
