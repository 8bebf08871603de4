"""modify_subscription_details: the one way staff change a subscription's description, customer and dates,
through the standard modify steps, recording who changed what; bad input is refused before any process."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from orchestrator_site.errors import InvalidInput
from processes.lookups import current_state
from processes.models import Process, ProcessStep
from processes.services import start_process, workflows_for
from subscriptions.models import Subscription, SubscriptionLifecycle
from tests.factories import SubscriptionFactory
from workflows.errors import WorkflowNotStartable
from workflows.registry import get_workflow

pytestmark = pytest.mark.django_db(transaction=True)  # the inline executor runs the process after the commit

NAME = "modify_subscription_details"
STARTED = dt.datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture
def subscription() -> Subscription:
    subscription = SubscriptionFactory(
        description="Core router Amsterdam", customer_id="acme", lifecycle=SubscriptionLifecycle.ACTIVE,
    )
    Subscription.objects.filter(pk=subscription.pk).update(start_date=STARTED)
    return Subscription.objects.get(pk=subscription.pk)


def details(subscription: Subscription, **changes: Any) -> dict[str, Any]:
    current = {
        "description": subscription.description, "customer_id": subscription.customer_id,
        "start_date": subscription.start_date.isoformat(), "end_date": None,
    }
    return {**current, **changes}


def update_row(process: Process) -> ProcessStep:
    return ProcessStep.objects.get(process=process, name="Update subscription details")


def test_it_runs_through_the_standard_modify_steps_on_every_product() -> None:
    spec = get_workflow(NAME)
    assert spec.target == "modify" and spec.product_types == ()
    assert spec.steps.names == [
        "Start", "Link subscription to process", "Unsync", "Update subscription details", "Resync", "Done",
    ]
    assert spec.allowed_statuses == ("active", "disabled")
    assert not spec.usable_while_out_of_sync


def test_it_changes_description_and_customer_and_records_old_and_new(subscription: Subscription) -> None:
    process = start_process(NAME, subscription_id=subscription.pk, by="alice",
                            user_input=details(subscription, description="Core router Utrecht", customer_id="globex"))

    assert process.status == "completed", process.failed_reason
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.description, stored.customer_id) == ("Core router Utrecht", "globex")
    assert stored.start_date == STARTED  # left alone, microseconds and all
    assert stored.insync is True and stored.status == "active"
    state = current_state(process)
    assert state["changed"] == {
        "description": {"old": "Core router Amsterdam", "new": "Core router Utrecht"},
        "customer_id": {"old": "acme", "new": "globex"},
    }
    assert state["changed_by"] == "alice" and state["outcome"] == "changed description, customer_id"
    assert update_row(process).created_by == "alice"


def test_it_sets_and_clears_the_end_date(subscription: Subscription) -> None:
    end = "2026-12-31T23:00:00+00:00"
    first = start_process(NAME, subscription_id=subscription.pk, by="bob",
                          user_input=details(subscription, end_date=end))

    assert current_state(first)["changed"] == {"end_date": {"old": None, "new": end}}
    assert Subscription.objects.get(pk=subscription.pk).end_date == dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC)

    second = start_process(NAME, subscription_id=subscription.pk, by="bob", user_input=details(subscription))

    assert current_state(second)["changed"] == {"end_date": {"old": end, "new": None}}
    assert Subscription.objects.get(pk=subscription.pk).end_date is None


def test_a_form_repeating_the_current_details_completes_saying_nothing_changed(subscription: Subscription) -> None:
    # As the admin's form sends the start date back: to the second.
    unchanged = details(subscription, start_date=STARTED.replace(microsecond=0).isoformat())

    process = start_process(NAME, subscription_id=subscription.pk, by="alice", user_input=unchanged)

    assert process.status == "completed"
    state = current_state(process)
    assert state["changed"] == {}
    assert state["outcome"] == "nothing changed: the form repeated the subscription's current details"
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.description, stored.start_date, stored.insync) == ("Core router Amsterdam", STARTED, True)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"end_date": "2025-03-01T09:30:14+00:00"}, "end_date", "The end date may not be before the start date."),
        ({"start_date": "2030-01-01T00:00:00+00:00", "end_date": "2029-12-31T00:00:00+00:00"}, "end_date",
         "The end date may not be before the start date."),
        ({"description": "   "}, "description", "This field may not be blank."),
        ({"customer_id": ""}, "customer_id", "This field may not be blank."),
        ({"start_date": None}, "start_date", "This field may not be null."),
        ({"start_date": "yesterday"}, "start_date", "Datetime has wrong format."),
    ],
    ids=["end-before-start", "both-dates-wrong-way", "blank-description", "blank-customer", "no-start", "bad-date"],
)
def test_bad_input_is_refused_before_any_process_exists(subscription: Subscription, changes: dict[str, Any],
                                                        field: str, message: str) -> None:
    version = subscription.version

    with pytest.raises(InvalidInput) as refused:
        start_process(NAME, subscription_id=subscription.pk, by="alice", user_input=details(subscription, **changes))

    assert refused.value.status_code == 400
    assert list(refused.value.errors) == [field] and refused.value.errors[field][0].startswith(message)
    assert not Process.objects.exists()
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.version, stored.insync, stored.description) == (version, True, "Core router Amsterdam")


def test_a_missing_customer_is_refused_too(subscription: Subscription) -> None:
    given = details(subscription)
    del given["customer_id"]

    with pytest.raises(InvalidInput) as refused:
        start_process(NAME, subscription_id=subscription.pk, user_input=given)

    assert refused.value.errors == {"customer_id": ["This field is required."]}
    assert not Process.objects.exists()


@pytest.mark.parametrize(("status", "allowed"), [
    ("initial", False), ("provisioning", False), ("active", True), ("disabled", True), ("migrating", False),
    ("terminated", False),
])
def test_it_is_allowed_on_active_and_disabled_subscriptions_only(status: str, allowed: bool) -> None:
    subscription = SubscriptionFactory(lifecycle=status)
    reasons = dict((spec.name, reasons) for spec, reasons in workflows_for(subscription))[NAME]

    assert (reasons == []) is allowed
    if not allowed:
        assert reasons == [f"subscription {subscription.pk} is {status}; {NAME} may start only on active, "
                           f"disabled subscriptions"]
        with pytest.raises(WorkflowNotStartable):
            start_process(NAME, subscription_id=subscription.pk, user_input={
                "description": "x", "customer_id": "y", "start_date": timezone.now().isoformat()})


def test_the_admin_start_page_shows_the_current_details_and_starts_it(staff_client, staff_user, settings,
                                                                     subscription: Subscription) -> None:
    settings.TIME_ZONE = "UTC"  # the times typed below
    url = reverse("admin:subscriptions_subscription_start", args=[subscription.pk, NAME])

    form = staff_client.get(url).context["form"]

    assert form.initial == {"description": "Core router Amsterdam", "customer_id": "acme", "start_date": STARTED,
                            "end_date": None}
    refused = staff_client.post(url, {"description": "Core router Amsterdam", "customer_id": "acme",
                                      "start_date": "2025-03-01 09:30:15", "end_date": "2025-01-01 00:00:00"})
    assert refused.status_code == 200
    assert refused.context["form"].errors == {"end_date": ["The end date may not be before the start date."]}
    assert not Process.objects.exists()

    response = staff_client.post(url, {"description": "Core router Amsterdam", "customer_id": "initech",
                                       "start_date": "2025-03-01 09:30:15", "end_date": ""})

    process = Process.objects.get()
    assert response.status_code == 302 and process.status == "completed"
    assert current_state(process)["changed"] == {"customer_id": {"old": "acme", "new": "initech"}}
    assert current_state(process)["changed_by"] == staff_user.username
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.customer_id, stored.start_date, stored.end_date) == ("initech", STARTED, None)
