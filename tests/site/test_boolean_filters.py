"""Yes/no list filters (orchestrator_site.filters.StrictBooleanFilter): true and false in their usual spellings
filter, and anything else is a 400 naming the parameter instead of a filter silently dropped."""

from __future__ import annotations

import pytest

from processes.services import start_process
from tests.factories import SubscriptionFactory
from tests.processes import compose_flows  # noqa: F401  (its workflows)

pytestmark = pytest.mark.django_db(transaction=True)


def ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


@pytest.mark.parametrize(("url", "param"), [
    ("/api/processes/", "is_child"), ("/api/processes/", "is_task"), ("/api/subscriptions/", "insync"),
    ("/api/workflows/", "is_task"),
])
@pytest.mark.parametrize("value", ["maybe", "2", "truthy"])
def test_a_yes_no_filter_given_neither_is_a_400_naming_it(staff_api, url, param, value):
    response = staff_api.get(url, {param: value})

    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [param]
    assert f"Enter true or false, not '{value}'." in body["errors"][param][0]


def test_a_yes_no_filter_takes_true_and_false_in_their_usual_spellings_and_empty_as_no_filter(staff_api):
    parent = start_process("t_fan_out", user_input={"count": 2, "tag": "spell"}, by="alice")
    kids = {str(pk) for pk in parent.children.values_list("process_id", flat=True)}
    everything = ids(staff_api.get("/api/processes/"))
    assert kids | {str(parent.process_id)} <= everything

    for spelling in ("true", "True", "1", "yes", "ON"):
        assert ids(staff_api.get("/api/processes/", {"is_child": spelling})) == kids
    for spelling in ("false", "FALSE", "0", "no", "off"):
        assert ids(staff_api.get("/api/processes/", {"is_child": spelling})) == everything - kids
    assert ids(staff_api.get("/api/processes/", {"is_child": ""})) == everything

    out_of_sync = SubscriptionFactory(insync=False)
    assert ids(staff_api.get("/api/subscriptions/", {"insync": "no"})) == {str(out_of_sync.subscription_id)}
