"""Process search: by the workflow's name and by its subscriptions (description, customer, values), or an id."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from processes.models import Process, ProcessStatus
from processes.search import search_processes
from tests.factories import (
    ProcessFactory,
    ProcessSubscriptionFactory,
    ResourceTypeFactory,
    SubscriptionFactory,
    SubscriptionInstanceFactory,
    SubscriptionInstanceValueFactory,
    WorkflowFactory,
)

AMS_SUB = uuid.UUID("5a1e0c7d-1111-4111-8111-000000000001")
RTM_SUB = uuid.UUID("5a1e0c7e-2222-4222-8222-000000000002")
MODIFY_AMS = uuid.UUID("a0000001-0000-4000-8000-000000000001")
TERMINATE_RTM = uuid.UUID("b0000002-0000-4000-8000-000000000002")
TASK = uuid.UUID("c0000003-0000-4000-8000-000000000003")


@pytest.fixture(params=["few", "many"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each search both ways: "few" as here, "many" as when a word's workflows hold more processes than
    LIST_COUNT_LIMIT (an OR the list's ordering index reads in order, instead of a UNION): the same answers."""
    if request.param == "many":
        monkeypatch.setattr("processes.search.count_limit", lambda: 0)
    return str(request.param)


@pytest.fixture
def processes(db, form) -> dict[str, Process]:
    ams = SubscriptionFactory(subscription_id=AMS_SUB, description="Core router Amsterdam", customer_id="ACME-42")
    rtm = SubscriptionFactory(subscription_id=RTM_SUB, description="Edge router Rotterdam", customer_id="globex-7")
    value = SubscriptionInstanceValueFactory(
        subscription_instance=SubscriptionInstanceFactory(subscription=ams),
        resource_type=ResourceTypeFactory(resource_type="node_name"), value="ams-rt1",
    )
    assert value.subscription_instance.subscription == ams
    made = {
        "modify_ams": ProcessFactory(process_id=MODIFY_AMS, workflow=WorkflowFactory(name="modify_node")),
        "terminate_rtm": ProcessFactory(process_id=TERMINATE_RTM, workflow=WorkflowFactory(name="terminate_node"),
                                        status=ProcessStatus.FAILED),
        "task": ProcessFactory(process_id=TASK, workflow=WorkflowFactory(name="task_validate_nodes"), is_task=True),
    }
    ProcessSubscriptionFactory(process=made["modify_ams"], subscription=ams)
    ProcessSubscriptionFactory(process=made["terminate_rtm"], subscription=rtm)
    return made


def found(term: str) -> set[str]:
    names = {MODIFY_AMS: "modify_ams", TERMINATE_RTM: "terminate_rtm", TASK: "task"}
    return {names[pk] for pk in search_processes(Process.objects.all(), term).values_list("pk", flat=True)}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("amsterdam", {"modify_ams"}),  # a word of its subscription's description
        ("Router", {"modify_ams", "terminate_rtm"}),
        ("acme", {"modify_ams"}),  # its subscription's customer id, in another case
        ("GLOBEX-7", {"terminate_rtm"}),
        ("ams-rt1", {"modify_ams"}),  # a resource value (a node name) of its subscription
        ("terminate", {"terminate_rtm"}),  # the workflow's name, as before
        ("node", {"modify_ams", "terminate_rtm", "task"}),
        ("validate", {"task"}),
        ("router node", {"modify_ams", "terminate_rtm"}),  # every word, each anywhere: subscription, workflow
        ("modify rotterdam", set()),  # both match, but not the same process
        ("terminate acme", set()),
        ("nowhere", set()),
        ("%", set()),
    ],
)
def test_search_finds_processes_by_their_workflow_and_their_subscriptions(processes, term, expected):
    assert found(term) == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        (str(MODIFY_AMS), {"modify_ams"}),  # the process's whole id
        ("b0000002", {"terminate_rtm"}),  # its first 8 hex digits
        ("c0000003-0000…", {"task"}),
        (str(RTM_SUB), {"terminate_rtm"}),  # a subscription's whole id
        ("5a1e0c7d", {"modify_ams"}),  # its first 8
        ("5a1e0c7", set()),  # 7 digits: no id
        ("a0000001 node", set()),  # an id is a whole term, not one word of several
    ],
)
def test_search_finds_processes_by_their_id_or_their_subscriptions_id(processes, term, expected):
    assert found(term) == expected


def test_a_process_on_several_matching_subscriptions_is_listed_once(processes):
    ProcessSubscriptionFactory(
        process=processes["modify_ams"], subscription=SubscriptionFactory(description="Second router")
    )
    assert list(search_processes(Process.objects.all(), "router").filter(pk=MODIFY_AMS)) == [processes["modify_ams"]]


# --- the admin and the API use it ----------------------------------------------------------------
def admin_found(client: Any, **params: str) -> set[uuid.UUID]:
    response = client.get(reverse("admin:processes_process_changelist"), params)
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


def test_admin_search_box_finds_processes_by_subscription_description_and_customer(staff_client, processes):
    assert admin_found(staff_client, q="amsterdam") == {MODIFY_AMS}
    assert admin_found(staff_client, q="globex") == {TERMINATE_RTM}
    assert admin_found(staff_client, q="ams-rt1") == {MODIFY_AMS}
    assert admin_found(staff_client, q="router", status__exact="failed") == {TERMINATE_RTM}
    assert admin_found(staff_client, q="task_validate") == {TASK}
    assert admin_found(staff_client, q="b0000002") == {TERMINATE_RTM}
    assert admin_found(staff_client, q="modify rotterdam") == set()


def api_found(api: APIClient, **params: str) -> set[str]:
    response = api.get("/api/processes/", params)
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_api_search_finds_processes_by_subscription_description_and_customer(api, processes):
    assert api_found(api, search="Amsterdam") == {str(MODIFY_AMS)}
    assert api_found(api, search="acme-42") == {str(MODIFY_AMS)}
    assert api_found(api, search="globex router") == {str(TERMINATE_RTM)}
    assert api_found(api, search="ams-rt1") == {str(MODIFY_AMS)}
    assert api_found(api, search="validate") == {str(TASK)}
    assert api_found(api, search=str(RTM_SUB)[:8]) == {str(TERMINATE_RTM)}
    assert api_found(api, search="nowhere") == set()
    assert api_found(api, search="") == {str(MODIFY_AMS), str(TERMINATE_RTM), str(TASK)}


def test_api_search_keeps_the_other_filters(api, processes):
    assert api_found(api, search="router", status="failed") == {str(TERMINATE_RTM)}
    assert api_found(api, search="router", is_task="true") == set()


def test_api_search_refuses_a_nul_character_naming_the_parameter(api, processes):
    response = api.get("/api/processes/", {"search": "router\x00"})
    assert response.status_code == 400
    assert "search" in response.json()["errors"]


@pytest.mark.requires_postgres
def test_postgresql_answers_the_process_search_from_indexes(processes):
    # As on a large table: reading one whole is out (see tests/subscriptions/test_search.py), leaving bitmap scans.
    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
    plan = search_processes(Process.objects.all(), "ams-rt1").explain()
    assert "Bitmap Index Scan on instance_value_trgm" in plan, plan
    assert "Seq Scan on subscriptions_subscriptioninstancevalue" not in plan, plan
    assert "Seq Scan on processes_processsubscription" not in plan, plan
