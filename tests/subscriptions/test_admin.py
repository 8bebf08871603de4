"""The subscriptions admin: every page answers, filters and search find the right rows, and a subscription's
data (its details, instances, values and relations) is shown but never edited by hand."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from subscriptions.access_models import BadTokenAttempts
from subscriptions.admin import CustomerFilter
from subscriptions.models import (
    FixedInput,
    Product,
    ProductBlock,
    ProductBlockRelation,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceRelation,
    SubscriptionInstanceValue,
    SubscriptionLifecycle,
    SubscriptionLifecycleEvent,
)
from tests.factories import (
    PATH_TO_STATUS,
    FixedInputFactory,
    ProductBlockFactory,
    ProductBlockRelationFactory,
    ProductFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
    SubscriptionInstanceFactory,
    SubscriptionInstanceRelationFactory,
    SubscriptionInstanceValueFactory,
)

pytestmark = pytest.mark.django_db


# --- helpers -------------------------------------------------------------------------------------
def changelist_url(model: type[Model]) -> str:
    return reverse(f"admin:subscriptions_{model._meta.model_name}_changelist")


def change_url(obj: Model) -> str:
    return reverse(f"admin:subscriptions_{obj._meta.model_name}_change", args=[obj.pk])


class _FormReader(HTMLParser):
    """Collects what a browser would submit from the form with the given id."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.in_form = False
        self.data: dict[str, str] = {}
        self.textareas: set[str] = set()
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.in_form = attr.get("id") == self.form_id
        if not self.in_form or ("name" not in attr and tag != "option"):
            return
        if tag == "input":
            kind = attr.get("type", "text")
            if kind in {"submit", "button", "image", "reset", "file"}:
                return
            if kind in {"checkbox", "radio"} and "checked" not in attr:
                return
            self.data[attr["name"]] = attr.get("value", "on" if kind == "checkbox" else "")
        elif tag == "textarea":
            self._textarea = attr["name"]
            self.textareas.add(self._textarea)
            self.data[self._textarea] = ""
        elif tag == "select":
            self._select = attr["name"]
        elif tag == "option" and self._select is not None and "selected" in attr:
            self.data[self._select] = attr.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.data[self._textarea] += data


def form_data(html: str, form_id: str) -> dict[str, str]:
    """The fields a browser would POST from the page's form, as they stand."""
    reader = _FormReader(form_id)
    reader.feed(html)
    # Like a browser, drop the newline Django writes right after <textarea>.
    return {
        key: value.removeprefix("\n") if key in reader.textareas else value for key, value in reader.data.items()
    }


def listed(client: Any, **params: str) -> set[Any]:
    """The primary keys the subscription changelist shows for these query parameters."""
    response = client.get(changelist_url(Subscription), params)
    assert response.status_code == 200, response
    return {obj.pk for obj in response.context["cl"].result_list}


def subscription_with_values() -> Subscription:
    subscription = SubscriptionFactory(lifecycle=SubscriptionLifecycle.ACTIVE)
    SubscriptionInstanceValueFactory(subscription_instance__subscription=subscription)
    return subscription


def product_with_parts() -> Product:
    product = FixedInputFactory().product
    product.product_blocks.add(ProductBlockFactory())
    return product


def block_with_parts() -> ProductBlock:
    block = ProductBlockRelationFactory().in_use_by
    block.resource_types.add(ResourceTypeFactory())
    return block


def lifecycle_event() -> SubscriptionLifecycleEvent:
    return SubscriptionFactory(lifecycle=SubscriptionLifecycle.ACTIVE).lifecycle_events.first()


def bad_token_attempts() -> BadTokenAttempts:
    return BadTokenAttempts.objects.create(address=f"192.0.2.{BadTokenAttempts.objects.count() + 1}", failures=2,
                                           window_started=timezone.now())


# One object of each model registered in the admin, with related rows for its inlines.
MAKERS: dict[type[Model], Callable[[], Model]] = {
    Product: product_with_parts,
    FixedInput: FixedInputFactory,
    ProductBlock: block_with_parts,
    ResourceType: ResourceTypeFactory,
    Subscription: subscription_with_values,
    SubscriptionInstance: lambda: SubscriptionInstanceValueFactory().subscription_instance,
    SubscriptionInstanceValue: SubscriptionInstanceValueFactory,
    SubscriptionLifecycleEvent: lifecycle_event,
    SubscriptionInstanceRelation: SubscriptionInstanceRelationFactory,
    BadTokenAttempts: bad_token_attempts,
}
each_model = pytest.mark.parametrize("model", list(MAKERS), ids=lambda model: model.__name__)


# --- every model ---------------------------------------------------------------------------------
def test_every_model_has_an_admin_and_is_tested_here() -> None:
    models = set(apps.get_app_config("subscriptions").get_models())
    registered = {model for model in models if admin.site.is_registered(model)}
    # ProductBlockRelation is edited inline on its block, not on a page of its own.
    assert registered == models - {ProductBlockRelation}
    assert set(MAKERS) == registered


@each_model
def test_staff_see_the_changelist_and_change_page(staff_client: Any, model: type[Model]) -> None:
    obj = MAKERS[model]()

    response = staff_client.get(changelist_url(model))
    assert response.status_code == 200
    assert obj.pk in {row.pk for row in response.context["cl"].result_list}

    response = staff_client.get(change_url(obj))
    assert response.status_code == 200
    assert response.context["original"].pk == obj.pk


@each_model
def test_anonymous_users_are_sent_to_the_login_page(client: Any, model: type[Model]) -> None:
    obj = MAKERS[model]()
    for url in (changelist_url(model), change_url(obj)):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login") + "?next=")


@each_model
def test_changelist_queries_do_not_grow_with_rows(staff_client: Any, model: type[Model]) -> None:
    MAKERS[model]()
    staff_client.get(changelist_url(model))  # warm caches (content types, session) out of the count
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(changelist_url(model)).status_code == 200
    for _ in range(6):
        MAKERS[model]()
    with CaptureQueriesContext(connection) as many:
        response = staff_client.get(changelist_url(model))
    assert len(response.context["cl"].result_list) >= 7
    assert len(many) == len(few), [query["sql"] for query in many.captured_queries]


# --- the subscription list -----------------------------------------------------------------------
def test_subscription_changelist_queries_are_the_same_for_5_and_50_rows(staff_client: Any) -> None:
    product = ProductFactory()
    SubscriptionFactory.create_batch(5, product=product)
    staff_client.get(changelist_url(Subscription))
    with CaptureQueriesContext(connection) as five:
        response = staff_client.get(changelist_url(Subscription))
    assert len(response.context["cl"].result_list) == 5

    SubscriptionFactory.create_batch(45)  # each with a product of its own
    with CaptureQueriesContext(connection) as fifty:
        response = staff_client.get(changelist_url(Subscription))
    assert len(response.context["cl"].result_list) == 50
    assert len(fifty) == len(five), [query["sql"] for query in fifty.captured_queries]


@pytest.fixture
def three_subscriptions() -> dict[str, Subscription]:
    core, edge = ProductFactory(name="Core node"), ProductFactory(name="Edge port")
    return {
        "a": SubscriptionFactory(
            product=core, customer_id="acme", insync=True, lifecycle=SubscriptionLifecycle.ACTIVE
        ),
        "b": SubscriptionFactory(
            product=edge, customer_id="globex", insync=False, lifecycle=SubscriptionLifecycle.DISABLED
        ),
        "c": SubscriptionFactory(product=core, customer_id="globex", insync=True),
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "active"}, "a"),
        ({"status__exact": "disabled"}, "b"),
        ({"status__exact": "initial"}, "c"),
        ({"status__exact": "terminated"}, ""),
        ({"insync__exact": "1"}, "ac"),
        ({"insync__exact": "0"}, "b"),
        ({"product__name": "Core node"}, "ac"),
        ({"customer_id": "acme"}, "a"),
        ({"customer_id": "globex"}, "bc"),
        ({"customer_id": "globex", "insync__exact": "1"}, "c"),
        ({}, "abc"),
    ],
)
def test_subscription_filters_show_exactly_the_matching_subscriptions(
    staff_client: Any, three_subscriptions: dict[str, Subscription], params: dict[str, str], expected: str
) -> None:
    if "product__name" in params:  # the product filter links by product id
        product = Product.objects.get(name=params.pop("product__name"))
        params["product__product_id__exact"] = str(product.pk)
    assert listed(staff_client, **params) == {three_subscriptions[key].pk for key in expected}


def test_customer_filter_offers_the_customers_and_keeps_a_selected_one_beyond_its_limit(
    staff_client: Any, three_subscriptions: dict[str, Subscription], monkeypatch: pytest.MonkeyPatch
) -> None:
    html = staff_client.get(changelist_url(Subscription)).content.decode()
    assert "?customer_id=acme" in html
    assert "?customer_id=globex" in html

    monkeypatch.setattr(CustomerFilter, "max_choices", 1)
    response = staff_client.get(changelist_url(Subscription), {"customer_id": "globex"})
    assert {row.pk for row in response.context["cl"].result_list} == {
        three_subscriptions["b"].pk, three_subscriptions["c"].pk
    }
    choices = next(spec for spec in response.context["cl"].filter_specs if isinstance(spec, CustomerFilter))
    assert [choice[0] for choice in choices.lookup_choices] == ["acme", "globex"]


X = uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-000000000001")
Y = uuid.UUID("0a1b2c3e-4e5f-4a6b-8c7d-000000000002")  # the same first 7 characters as X


@pytest.fixture
def searchable() -> dict[str, Subscription]:
    return {
        "x": SubscriptionFactory(subscription_id=X, description="Core router Amsterdam", customer_id="acme-42"),
        "y": SubscriptionFactory(subscription_id=Y, description="Edge switch Utrecht", customer_id="globex-7"),
    }


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("Amsterdam", "x"),
        ("edge switch", "y"),
        ("globex-7", "y"),
        ("acme-42 Amsterdam", "x"),
        (str(X), "x"),
        (str(X).upper(), "x"),
        (f"  {X}  ", "x"),
        (X.hex, "x"),
        (str(Y), "y"),
        (str(X)[:8], "x"),
        (str(Y)[:8], "y"),
        ("0A1B2C3D", "x"),
        ("0a1b2c3d…", "x"),  # the short id as the list shows it
        ("0a1b2c3d-4e5f", "x"),
        (X.hex[:12], "x"),
        ("0a1b2c3", ""),  # fewer than 8 characters: not taken as an id
        ("0a1b2c3f", ""),
        ("not-a-uuid", ""),
        ("Amsterdam 0a1b2c3e", ""),
        ("ab%_\\", ""),
    ],
)
def test_subscription_search(
    staff_client: Any, searchable: dict[str, Subscription], term: str, expected: str
) -> None:
    assert listed(staff_client, q=term) == {searchable[key].pk for key in expected}


def test_search_by_id_respects_the_active_filters(staff_client: Any, searchable: dict[str, Subscription]) -> None:
    assert listed(staff_client, q=str(X)[:8], customer_id="acme-42") == {X}
    assert listed(staff_client, q=str(X)[:8], customer_id="globex-7") == set()


# --- one subscription ----------------------------------------------------------------------------
def test_change_page_shows_instances_values_and_lifecycle_history(staff_client: Any) -> None:
    process_id = uuid.uuid4()
    subscription = SubscriptionFactory(description="Node ams-core-1")
    subscription.provision(by="noc-operator-7", process_id=process_id)
    subscription.save()
    subscription.activate(by="noc-operator-7", process_id=process_id)
    subscription.save()
    node = SubscriptionInstanceFactory(
        subscription=subscription, product_block=ProductBlockFactory(name="NodeBlock"), label="ams-core-1"
    )
    SubscriptionInstanceValueFactory(
        subscription_instance=node, resource_type=ResourceTypeFactory(resource_type="ipv4_loopback"),
        value="10.255.0.1/32",
    )
    SubscriptionInstanceValueFactory(
        subscription_instance=node, resource_type=ResourceTypeFactory(resource_type="node_note"),
        value="<b>bold</b>",
    )

    response = staff_client.get(change_url(subscription))

    html = response.content.decode()
    assert response.status_code == 200
    for text in ("NodeBlock", "ams-core-1", "ipv4_loopback", "10.255.0.1/32", change_url(node)):
        assert text in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<b>bold</b>" not in html
    history = response.context["inline_admin_formsets"][0]
    assert history.formset.model is SubscriptionLifecycleEvent
    assert [form.instance.transition for form in history.formset.forms] == ["provision", "activate"]
    for text in ("provision", "activate", "noc-operator-7", str(process_id)):
        assert text in html
    # The history is read-only: no fields, no delete boxes, no "add another" row.
    assert 'name="lifecycle_events-0-transition"' not in html
    assert "lifecycle_events-0-DELETE" not in html
    assert history.formset.max_num == 0


def test_the_change_page_shows_every_field_read_only_with_no_save_button(staff_client: Any) -> None:
    subscription = SubscriptionFactory(lifecycle=SubscriptionLifecycle.ACTIVE, note="rack B3")
    response = staff_client.get(change_url(subscription))

    html = response.content.decode()
    data = form_data(html, "subscription_form")
    # Nothing a browser could send back but the token and the read-only history's hidden bookkeeping.
    assert {key for key in data if not key.startswith("lifecycle_events-")} == {"csrfmiddlewaretoken"}
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    for text in (subscription.description, subscription.customer_id, "rack B3"):
        assert text in html
    assert response.context["has_change_permission"] is False


def test_change_page_queries_do_not_grow_with_instances(staff_client: Any) -> None:
    subscription = SubscriptionFactory(lifecycle=SubscriptionLifecycle.ACTIVE)
    SubscriptionInstanceValueFactory(subscription_instance__subscription=subscription)
    staff_client.get(change_url(subscription))
    with CaptureQueriesContext(connection) as one:
        staff_client.get(change_url(subscription))
    for _ in range(5):
        instance = SubscriptionInstanceFactory(subscription=subscription)
        SubscriptionInstanceValueFactory.create_batch(2, subscription_instance=instance)
    with CaptureQueriesContext(connection) as six:
        response = staff_client.get(change_url(subscription))
    html = response.content.decode()
    assert html.count('class="block-instance"') == 6
    assert html.count("<tr><th>resource_") == 11
    assert len(six) == len(one), [query["sql"] for query in six.captured_queries]


@pytest.mark.parametrize("status", list(PATH_TO_STATUS))
def test_posting_the_change_form_is_refused_and_changes_nothing(staff_client: Any, status: str) -> None:
    subscription = SubscriptionFactory(lifecycle=status, note="", description="Core router")
    version_before = subscription.version
    data = {
        "description": "typed over", "customer_id": "someone-else", "note": "by hand", "insync": "on",
        "start_date_0": "2020-01-01", "start_date_1": "00:00:00", "status": "active",
    }

    response = staff_client.post(change_url(subscription), data)

    assert response.status_code == 403
    subscription.refresh_from_db()
    assert (subscription.description, subscription.note, subscription.status) == ("Core router", "", status)
    assert subscription.version == version_before


def test_subscriptions_cannot_be_added_or_deleted(staff_client: Any) -> None:
    subscription = SubscriptionFactory()
    assert staff_client.get(reverse("admin:subscriptions_subscription_add")).status_code == 403
    delete_url = reverse("admin:subscriptions_subscription_delete", args=[subscription.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    response = staff_client.post(
        changelist_url(Subscription), {"action": "delete_selected", "_selected_action": [subscription.pk]}
    )
    assert "delete_selected" not in response.content.decode()
    assert "Are you sure" not in response.content.decode()
    assert Subscription.objects.filter(pk=subscription.pk).exists()


def test_lifecycle_events_cannot_be_added_changed_or_deleted(staff_client: Any) -> None:
    event = lifecycle_event()
    assert staff_client.get(reverse("admin:subscriptions_subscriptionlifecycleevent_add")).status_code == 403
    response = staff_client.post(change_url(event), {"transition": "forged", "changed_by": "mallory"})
    assert response.status_code == 403
    delete_url = reverse("admin:subscriptions_subscriptionlifecycleevent_delete", args=[event.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert (event.transition, event.changed_by) == ("provision", "factory")


# --- a subscription's parts ----------------------------------------------------------------------
PARTS = {
    SubscriptionInstance: lambda: SubscriptionInstanceValueFactory().subscription_instance,
    SubscriptionInstanceValue: SubscriptionInstanceValueFactory,
    SubscriptionInstanceRelation: SubscriptionInstanceRelationFactory,
}


@pytest.mark.parametrize("model", list(PARTS), ids=lambda model: model.__name__)
def test_instances_values_and_relations_cannot_be_added_changed_or_deleted(
    staff_client: Any, model: type[Model]
) -> None:
    obj = PARTS[model]()
    row_before = model.objects.filter(pk=obj.pk).values().get()
    versions_before = dict(Subscription.objects.values_list("pk", "version"))
    name = model._meta.model_name
    page = staff_client.get(change_url(obj))
    assert page.status_code == 200  # shown ...
    assert page.context["has_change_permission"] is False and 'name="_save"' not in page.content.decode()

    # ... but never added, changed or deleted, not even by a superuser.
    assert staff_client.get(reverse(f"admin:subscriptions_{name}_add")).status_code == 403
    assert staff_client.post(change_url(obj), {"value": "not-an-ip-address", "label": "x"}).status_code == 403
    delete_url = reverse(f"admin:subscriptions_{name}_delete", args=[obj.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    response = staff_client.post(changelist_url(model), {"action": "delete_selected", "_selected_action": [obj.pk]})
    assert "Are you sure" not in response.content.decode()
    assert model.objects.filter(pk=obj.pk).values().get() == row_before
    assert dict(Subscription.objects.values_list("pk", "version")) == versions_before


def test_staff_lift_an_addresses_bad_token_block_by_deleting_its_row_but_never_add_or_change_one(
    staff_client: Any,
) -> None:
    row = bad_token_attempts()
    assert staff_client.get(reverse("admin:subscriptions_badtokenattempts_add")).status_code == 403
    assert staff_client.post(change_url(row), {"failures": "0"}).status_code == 403

    delete_url = reverse("admin:subscriptions_badtokenattempts_delete", args=[row.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not BadTokenAttempts.objects.exists()


def test_an_ip_address_cannot_be_typed_into_an_active_subscriptions_value(staff_client: Any) -> None:
    value = SubscriptionInstanceValueFactory(
        subscription_instance__subscription=SubscriptionFactory(lifecycle=SubscriptionLifecycle.ACTIVE),
        resource_type=ResourceTypeFactory(resource_type="ipv4_loopback"), value="10.0.0.1",
    )
    instance_url = change_url(value.subscription_instance)
    page = staff_client.get(instance_url).content.decode()
    assert "10.0.0.1" in page
    assert 'name="values-0-value"' not in page  # the inline shows the value, with no field to type into

    response = staff_client.post(instance_url, {
        "values-TOTAL_FORMS": "1", "values-INITIAL_FORMS": "1", "values-0-id": str(value.pk),
        "values-0-value": "not-an-ip-address", "values-0-subscription_instance": str(value.subscription_instance_id),
    })

    assert response.status_code == 403
    value.refresh_from_db()
    assert value.value == "10.0.0.1"
