"""A long process's detail comes a page of steps at a time, in the API and the admin, each step's state on demand."""

from __future__ import annotations

import pytest

from processes.bench_workflow import declare_bench_workflow
from processes.engine import current_state
from processes.models import Process, ProcessStep
from processes.services import start_process
from workflows.registry import unregister

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 120  # 122 log rows: Start, 120 body steps, Done


@pytest.fixture
def long_process(settings):
    settings.ORCHESTRATOR = {"STEPS_PAGE_SIZE": 50}
    spec = declare_bench_workflow(STEPS, 200)
    try:
        process = start_process(spec.name)
        assert process.status == "completed"
        yield process
    finally:
        unregister(spec.name)


@pytest.fixture
def api(staff_api):
    return staff_api


def test_the_api_detail_holds_the_newest_page_of_steps_and_links_to_the_earlier_ones(api, long_process):
    body = api.get(f"/api/processes/{long_process.pk}/").json()

    assert body["steps_count"] == STEPS + 2
    assert [step["number"] for step in body["steps"]] == list(range(STEPS + 2 - 49, STEPS + 3))
    assert body["steps"][-1]["name"] == "Done"
    assert body["current_state"] == current_state(long_process)
    assert "state" not in body["steps"][0]  # the whole state is one request away
    assert body["steps"][-2]["state_delta"]["added"].keys() == {f"payload_{STEPS}"}

    earlier = api.get(body["earlier_steps"]).json()
    assert earlier["count"] == STEPS + 2
    assert [step["number"] for step in earlier["results"]] == list(range(23, 73))
    first = api.get(earlier["previous"]).json()
    assert [step["number"] for step in first["results"]] == list(range(1, 51)) and first["previous"] is None
    assert first["next"]


def test_every_page_of_the_api_steps_list_with_states_matches_the_state_after_each_row(api, long_process):
    rows = list(ProcessStep.objects.filter(process=long_process).order_by("id"))
    url = f"/api/processes/{long_process.pk}/steps/?limit=17&with_state=true"
    seen = []
    while url:
        page = api.get(url).json()
        seen += page["results"]
        url = page["next"]
    assert [step["number"] for step in seen] == list(range(1, len(rows) + 1))
    assert [step["state"] for step in seen] == [row.state_after() for row in rows]


def test_one_step_answers_with_its_whole_state_and_an_unknown_number_is_404(api, long_process):
    step = api.get(f"/api/processes/{long_process.pk}/steps/3/").json()
    assert step["number"] == 3 and step["name"] == "Step 2"
    assert set(step["state"]) >= {"payload_1", "payload_2"} and "payload_3" not in step["state"]

    for number in (0, STEPS + 3):
        response = api.get(f"/api/processes/{long_process.pk}/steps/{number}/")
        assert response.status_code == 404
        assert f"has no step {number}" in response.json()["detail"]


def test_the_admin_page_shows_a_page_of_the_timeline_with_links_and_each_state_on_its_own_page(
        staff_client, long_process):
    url = f"/admin/processes/process/{long_process.pk}/change/"
    html = staff_client.get(url).content.decode()
    assert f"Steps {STEPS + 2 - 49} to {STEPS + 2} of {STEPS + 2}" in html
    assert 'id="step-122"' in html and 'id="step-72"' not in html
    assert "earlier steps" in html and "later steps" not in html
    # No whole state is inlined: only what the shown steps changed (the page stays small whatever the state).
    assert "<strong>payload_100</strong>" in html and "<strong>payload_5</strong>" not in html

    earlier = staff_client.get(f"{url}?steps_from=0").content.decode()
    assert "Steps 1 to 50 of 122" in earlier and 'id="step-1"' in earlier and "later steps" in earlier

    state_page = staff_client.get(f"/admin/processes/process/{long_process.pk}/steps/3/").content.decode()
    assert "payload_2" in state_page and "payload_3" not in state_page
    assert 'id="step-previous"' in state_page and 'id="step-next"' in state_page
    missing = staff_client.get(f"/admin/processes/process/{long_process.pk}/steps/999/", follow=True)
    assert "has no step 999" in missing.content.decode()


def test_the_admin_page_and_the_api_detail_run_the_same_number_of_queries_for_a_short_and_a_long_log(
        api, staff_client, long_process, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    short = start_process(declare_bench_workflow(3, 10).name)
    counts = {}
    for process in (short, long_process):
        with CaptureQueriesContext(connection) as api_queries:
            api.get(f"/api/processes/{process.pk}/")
        with CaptureQueriesContext(connection) as admin_queries:
            staff_client.get(f"/admin/processes/process/{process.pk}/change/")
        counts[process.pk] = (len(api_queries), len(admin_queries))
    unregister("bench_3x10")
    (api_short, admin_short), (api_long, admin_long) = counts[short.pk], counts[long_process.pk]
    # One more for the long log: the state before the page it shows.
    assert api_long <= api_short + 1 and admin_long <= admin_short + 1
    assert Process.objects.count() == 2
