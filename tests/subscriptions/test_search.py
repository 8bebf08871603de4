"""Subscription search: words of the description, customer, resource values or product, or an id; one implementation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from subscriptions.indexes import TrigramIndex
from subscriptions.models import Subscription, SubscriptionInstanceValue
from subscriptions.search import search_subscriptions, search_words
from tests.factories import (
    ProductFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
    SubscriptionInstanceFactory,
    SubscriptionInstanceValueFactory,
    UserFactory,
)

AMS = uuid.UUID("5a1e0c7d-1111-4111-8111-000000000001")
RTM = uuid.UUID("5a1e0c7e-2222-4222-8222-000000000002")  # the same first 7 hex digits as AMS
UTR = uuid.UUID("0badcafe-3333-4333-8333-000000000003")


def with_value(subscription: Subscription, resource_type: str, value: str) -> Subscription:
    """Give the subscription an instance holding `value` for `resource_type`."""
    instance = SubscriptionInstanceFactory(subscription=subscription)
    SubscriptionInstanceValueFactory(
        subscription_instance=instance, resource_type=ResourceTypeFactory(resource_type=resource_type), value=value
    )
    return subscription


@pytest.fixture
def fleet(db) -> dict[str, Subscription]:
    node = ProductFactory(name="Node Large", product_type="Node")
    port = ProductFactory(name="Port 10G", product_type="Port")
    return {
        "ams": with_value(
            SubscriptionFactory(subscription_id=AMS, product=node, description="Core router Amsterdam",
                                customer_id="ACME-42"),
            "node_name", "ams-rt1",
        ),
        "rtm": with_value(
            SubscriptionFactory(subscription_id=RTM, product=node, description="Edge router Rotterdam",
                                customer_id="globex-7"),
            "node_name", "rtm-rt2",
        ),
        "utr": with_value(
            SubscriptionFactory(subscription_id=UTR, product=port, description="Uplink 100% of 10_000 Mbit",
                                customer_id="initech"),
            "port_name", "xe-0/0/1",
        ),
    }


def found(term: str) -> set[str]:
    names = {AMS: "ams", RTM: "rtm", UTR: "utr"}
    return {names[pk] for pk in search_subscriptions(Subscription.objects.all(), term).values_list("pk", flat=True)}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("ams-rt1", {"ams"}),  # a node name: a resource value of the subscription's own instance
        ("RT2", {"rtm"}),  # part of a value, in any case
        ("xe-0/0/1", {"utr"}),
        ("acme", {"ams"}),  # part of the customer id, in another case
        ("globex-7", {"rtm"}),
        ("amsterdam", {"ams"}),  # a description word
        ("router", {"ams", "rtm"}),
        ("dam", {"ams", "rtm"}),  # Amsterdam, Rotterdam: a substring, not a whole word
        ("Node Large", {"ams", "rtm"}),  # the product's name, word by word
        ("port", {"utr"}),  # the product type
    ],
)
def test_search_finds_a_subscription_by_what_is_known_of_it(fleet, term, expected):
    assert found(term) == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        (str(AMS), {"ams"}),  # the whole id
        (str(AMS).upper(), {"ams"}),
        (AMS.hex, {"ams"}),
        ("5a1e0c7d", {"ams"}),  # the first 8 hex digits, as the admin's list shows them
        ("5a1e0c7d…", {"ams"}),
        ("5a1e0c7e-2222", {"rtm"}),
        ("5a1e0c7", set()),  # 7 digits: too short to be an id, and no text holds it
        ("0badcafe3333", {"utr"}),
        ("0badcaff", set()),
    ],
)
def test_search_finds_a_subscription_by_its_id_or_id_prefix(fleet, term, expected):
    assert found(term) == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("router amsterdam", {"ams"}),  # both in the description
        ("router rt2", {"rtm"}),  # one in the description, one in a value
        ("acme rt1 node", {"ams"}),  # customer, value, product type
        ("router initech", set()),  # each word matches a subscription, but not the same one
        ("amsterdam 5a1e0c7e", set()),  # an id is a whole term, not one word of several
        ('"Core router"', {"ams"}),  # a quoted phrase is one word
        ('"router Core"', set()),
    ],
)
def test_every_word_must_match_somewhere_in_the_same_subscription(fleet, term, expected):
    assert found(term) == expected


@pytest.mark.parametrize("term", ["nowhere", "rt3", "rt1 nowhere", "amsterdam globex", "ams%rt1", "1_0", "\\"])
def test_search_makes_no_false_hits(fleet, term):
    assert found(term) == set()


def test_like_wildcards_in_a_term_match_only_themselves(fleet):
    # Only "utr" holds a percent sign and an underscore (its description).
    assert found("%") == found("_") == {"utr"}
    assert found("100%") == found("10_000") == found("10_0") == {"utr"}
    assert found("1_0") == set()  # "_" is not "any character"
    assert found("ams%rt1") == set()  # nor is "%" "anything"


def test_a_value_of_another_subscription_does_not_find_this_one(fleet):
    # The instance belongs to "rtm": its value finds rtm only, never the subscriptions around it.
    assert found("rtm-rt2") == {"rtm"}
    assert found("ams-rt1 rtm-rt2") == set()


def test_each_subscription_is_listed_once_however_many_places_match(fleet):
    with_value(fleet["ams"], "description_copy", "router")
    with_value(fleet["ams"], "router_alias", "router-ams")
    results = list(search_subscriptions(Subscription.objects.all(), "router"))
    assert sorted(s.pk for s in results) == sorted([AMS, RTM])


def test_a_blank_term_finds_everything_and_nul_characters_are_dropped(fleet):
    assert found("") == found("   ") == {"ams", "rtm", "utr"}
    assert found("ams\x00-rt1") == {"ams"}
    assert search_words(' a "b c" a\x00 ') == ["a", "b c"]


def test_search_keeps_the_filters_already_on_the_queryset(fleet):
    active = Subscription.objects.filter(customer_id="globex-7")
    assert set(search_subscriptions(active, "router").values_list("pk", flat=True)) == {RTM}
    assert not search_subscriptions(active, str(AMS)[:8]).exists()


# --- the API and the admin use it ----------------------------------------------------------------
def api_found(api: APIClient, **params: str) -> set[str]:
    response = api.get("/api/subscriptions/", params)
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_api_search_finds_by_resource_value_customer_description_product_and_id(api, fleet):
    assert api_found(api, search="ams-rt1") == {str(AMS)}
    assert api_found(api, search="ACME") == {str(AMS)}
    assert api_found(api, search="rotterdam") == {str(RTM)}
    assert api_found(api, search="Port 10G") == {str(UTR)}
    assert api_found(api, search="5a1e0c7d") == {str(AMS)}
    assert api_found(api, search="router rt2") == {str(RTM)}
    assert api_found(api, search="nowhere") == set()


def test_api_search_keeps_the_other_filters(api, fleet):
    assert api_found(api, search="router", customer_id="globex-7") == {str(RTM)}
    assert api_found(api, search="5a1e0c7d", customer_id="globex-7") == set()


def test_api_search_refuses_a_nul_character_naming_the_parameter(api, fleet):
    response = api.get("/api/subscriptions/", {"search": "rt\x001"})
    assert response.status_code == 400
    assert "search" in response.json()["errors"]


@pytest.mark.parametrize("url", ["/api/subscriptions/", "/api/processes/"])
def test_browsable_api_shows_a_search_box_with_the_whole_term(api, fleet, url):
    response = api.get(url, {"search": "core router"}, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert 'name="search" value="core router"' in response.content.decode()


def test_api_search_documents_what_it_searches():
    from subscriptions.api.filters import SubscriptionSearchFilter
    from subscriptions.api.views import SubscriptionViewSet

    [param] = SubscriptionSearchFilter().get_schema_operation_parameters(SubscriptionViewSet())
    assert param["name"] == "search"
    assert "resource value" in param["description"] and "product" in param["description"]


def admin_found(client: Any, term: str) -> set[str]:
    response = client.get(reverse("admin:subscriptions_subscription_changelist"), {"q": term})
    assert response.status_code == 200
    return {str(row.pk) for row in response.context["cl"].result_list}


def test_admin_search_box_uses_the_same_search(staff_client, fleet):
    assert admin_found(staff_client, "ams-rt1") == {str(AMS)}
    assert admin_found(staff_client, "rt2 globex") == {str(RTM)}
    assert admin_found(staff_client, "port") == {str(UTR)}
    assert admin_found(staff_client, "5a1e0c7e…") == {str(RTM)}
    assert admin_found(staff_client, "router initech") == set()
    page = staff_client.get(reverse("admin:subscriptions_subscription_changelist")).content.decode()
    assert "any resource value (a node name)" in page  # the help text says what it searches


def test_admin_autocomplete_of_subscriptions_uses_the_same_search(staff_client, fleet):
    response = staff_client.get(
        reverse("admin:autocomplete"),
        {"term": "rtm-rt2", "app_label": "subscriptions", "model_name": "subscriptioninstance",
         "field_name": "subscription"},
    )
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(RTM)]


# --- the indexes ---------------------------------------------------------------------------------
def test_trigram_indexes_are_gin_on_postgresql_and_nothing_elsewhere(db):
    index = TrigramIndex(fields=["value"], name="instance_value_trgm")
    sql = str(index.create_sql(SubscriptionInstanceValue, connection.schema_editor()))
    if connection.vendor == "postgresql":
        assert 'USING gin ("value" gin_trgm_ops)' in sql
    else:
        assert sql.startswith("-- trigram index instance_value_trgm: PostgreSQL only")
    assert index.deconstruct() == (
        "subscriptions.indexes.TrigramIndex", (), {"name": "instance_value_trgm", "fields": ["value"]}
    )


@pytest.mark.requires_postgres
def test_postgresql_answers_each_word_from_the_trigram_indexes(fleet):
    """The query's shape lets PostgreSQL use the indexes: ILIKE on the bare column, each place its own subquery.

    These few rows would be read whole, so the planner is told what a large table tells it: reading a table
    whole (a sequential scan, or a plain index scan from end to end) is out, leaving bitmap scans, which
    need a condition an index serves. A query no index can serve still shows a Seq Scan, at any price.
    (`bench_search --explain` shows the plans the planner picks by itself among 100,000 subscriptions.)
    """
    queryset = search_subscriptions(Subscription.objects.all(), "ams-rt1")
    plan = explain_reading_no_table_whole(queryset)
    for index in ("subscription_description_trgm", "subscription_customer_trgm", "instance_value_trgm"):
        assert f"Bitmap Index Scan on {index}" in plan, plan
    assert "Seq Scan on subscriptions_subscriptioninstancevalue" not in plan, plan
    assert "Seq Scan on subscriptions_subscription " not in plan, plan


def explain_reading_no_table_whole(queryset: Any) -> str:
    """The plan of `queryset` with full scans priced out, as they are on a large table (PostgreSQL)."""
    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
    return queryset.explain()


def test_a_search_of_too_many_words_is_a_400_naming_the_limit(db):
    from rest_framework.test import APIClient

    from subscriptions.search import MAX_SEARCH_WORDS

    client = APIClient()
    client.force_authenticate(UserFactory())
    words = " ".join(f"w{i}" for i in range(MAX_SEARCH_WORDS + 1))

    for url in ("/api/subscriptions/", "/api/processes/"):
        response = client.get(url, {"search": words})
        assert response.status_code == 400, url
        assert response.json()["errors"] == {"search": [f"At most {MAX_SEARCH_WORDS} words can be searched for."]}
    assert client.get("/api/subscriptions/", {"search": " ".join(words.split()[:-1])}).status_code == 200
