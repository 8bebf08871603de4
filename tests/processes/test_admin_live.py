"""Live admin pages: what a process page, the list and the counts check for changes, how often, and at what cost."""

from __future__ import annotations

import html as htmllib
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from processes.models import Process
from processes.services import start_process
from tests.factories import ProcessFactory, UserFactory, api_token
from tests.processes.wait_flows import FakeSystem

pytestmark = pytest.mark.django_db

STEPS = ["Start", "Write A", "Plan", "Deploy config", "Write C", "Done"]


def detail(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def live_of(html: str, element_id: str) -> dict[str, str]:
    """The data-live-* attributes of the element with this id (unescaped, as the script reads them)."""
    tag = re.search(rf'<div[^>]*id="{element_id}"[^>]*>', html, re.S)
    assert tag, f"no #{element_id} on the page"
    return {name: htmllib.unescape(value) for name, value in re.findall(r'data-(live[\w-]*)="([^"]*)"', tag.group(0))}


def running(**fields) -> Process:
    values = {"status": "running", "workflow_version": STEPS, "current_step": 3,
              "last_modified_at": timezone.now() - timedelta(seconds=42)}
    return ProcessFactory(**{**values, **fields})


def bump(process: Process) -> None:
    """What every step that ends does to the row (with its log row): a change a page must see."""
    Process.objects.filter(pk=process.pk).update(last_modified_at=timezone.now())


# --- the process page ----------------------------------------------------------------------------------
def test_a_running_process_page_says_which_step_runs_since_when_and_checks_every_2_seconds(staff_client):
    process = running()
    since = timezone.localtime(process.last_modified_at)

    html = staff_client.get(detail(process)).content.decode()

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", re.search(r'<p class="running-step".*?</p>', html, re.S)[0]))
    # 42 s ago when the row was made (a slow machine takes a moment more to render the page).
    assert re.fullmatch(rf"running step 4 'Deploy config' since {since:%H:%M:%S} \(4[2-5] s\)", text.strip()), text
    assert re.search(r'data-live-elapsed="4[2-5]\.\d"', html)  # the script ticks on from the server's count
    live = live_of(html, "process-live")
    assert (live["live"], live["live-seconds"]) == ("fast", "2")
    assert live["live-url"] == f"/api/processes/{process.pk}/"
    assert "processes/live.js" in html and "processes/live.css" in html


def test_a_step_running_since_yesterday_shows_the_date_too(staff_client):
    process = running(last_modified_at=timezone.now() - timedelta(days=1, minutes=5))

    html = staff_client.get(detail(process)).content.decode()

    since = timezone.localtime(process.last_modified_at)
    assert f"{since:%Y-%m-%d %H:%M:%S}</time>" in html
    assert ">1 d 5 min</span>)" in html


@pytest.mark.parametrize("status", ["waiting", "awaiting_callback"])
def test_a_waiting_process_page_checks_every_10_seconds_and_shows_no_running_step(staff_client, status):
    process = ProcessFactory(status=status, workflow_version=STEPS, current_step=3)

    html = staff_client.get(detail(process)).content.decode()

    live = live_of(html, "process-live")
    assert (live["live"], live["live-seconds"]) == ("slow", "10")
    assert 'class="running-step"' not in html


@pytest.mark.parametrize("status", ["completed", "aborted", "failed", "suspended", "inconsistent_data"])
def test_a_process_that_only_a_person_can_move_on_is_not_checked(staff_client, status):
    process = ProcessFactory(status=status, workflow_version=STEPS, current_step=3)

    html = staff_client.get(detail(process)).content.decode()

    assert live_of(html, "process-live")["live"] == "off"
    assert 'class="running-step"' not in html


def test_the_intervals_come_from_the_settings_and_0_turns_checking_off(staff_client, settings):
    settings.ORCHESTRATOR = {"LIVE_POLL_SECONDS": 0.5, "LIVE_POLL_WAITING_SECONDS": 0}
    moving, waiting = running(), ProcessFactory(status="waiting", workflow_version=STEPS)

    assert live_of(staff_client.get(detail(moving)).content.decode(), "process-live")["live-seconds"] == "0.5"
    assert live_of(staff_client.get(detail(waiting)).content.decode(), "process-live")["live"] == "off"


def test_the_page_s_first_check_is_a_304_from_one_query_beyond_the_login(staff_client, staff_user,
                                                                            django_assert_max_num_queries):
    process = running()
    live = live_of(staff_client.get(detail(process)).content.decode(), "process-live")
    check = {"headers": {"If-None-Match": live["live-etag"]}}

    # The session's two (session row, user row) and the process row's one.
    with django_assert_max_num_queries(3):
        unchanged = staff_client.get(live["live-url"], **check)
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == live["live-etag"]
    # With a token: the token and its user in one, then the process row.
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {api_token(staff_user)}")
    with django_assert_max_num_queries(2):
        assert token.get(live["live-url"], **check).status_code == 304

    bump(process)
    changed = staff_client.get(live["live-url"], **check)
    assert changed.status_code == 200 and changed.headers["ETag"] != live["live-etag"]
    assert changed.json()["status"] == "running"


@pytest.mark.django_db(transaction=True)  # the inline executor runs the process once its start commits
def test_a_process_awaiting_its_callback_shows_its_progress_and_its_answer_at_the_next_check(staff_client):
    FakeSystem.reset()
    process = start_process("t_callback", by="alice")
    assert Process.objects.get(pk=process.pk).status == "awaiting_callback"

    def page_checks() -> dict[str, str]:
        live = live_of(staff_client.get(detail(process)).content.decode(), "process-live")
        assert (live["live"], live["live-seconds"]) == ("slow", "10")
        return live

    def unchanged(live: dict[str, str]) -> bool:
        response = staff_client.get(live["live-url"], headers={"If-None-Match": live["live-etag"]})
        assert response.status_code in (200, 304)
        return response.status_code == 304

    live = page_checks()
    assert unchanged(live)
    asked = FakeSystem.last("deploy")
    progress = APIClient().post(FakeSystem.path(asked["progress_url"]), {"message": "pushing"}, format="json")
    assert progress.status_code in (200, 201, 202), progress.content
    assert not unchanged(live)  # a progress message to show

    live = page_checks()
    answer = APIClient().post(FakeSystem.path(asked["url"]), {"ok": True, "device": "rtr-1"}, format="json")
    assert answer.status_code in (200, 202), answer.content
    assert not unchanged(live)
    html = staff_client.get(detail(process)).content.decode()
    assert live_of(html, "process-live")["live"] == "off"
    assert 'id="process-status" class="status-badge status-completed"' in html


# --- the process list ----------------------------------------------------------------------------------
LIST = "admin:processes_process_changelist"


def test_the_list_checks_the_unfinished_processes_it_shows_and_sees_one_change(staff_client,
                                                                                 django_assert_max_num_queries):
    moving, waiting = running(), ProcessFactory(status="awaiting_callback")
    ProcessFactory(status="completed")
    ProcessFactory(status="failed")

    live = live_of(staff_client.get(reverse(LIST)).content.decode(), "live-list")

    assert (live["live"], live["live-seconds"]) == ("fast", "2")
    path, ids = live["live-url"].split("?ids=")
    assert path == reverse("admin:processes_process_live")
    assert sorted(ids.split(",")) == sorted([moving.pk.hex, waiting.pk.hex])  # not the finished or failed ones
    check = {"headers": {"If-None-Match": live["live-etag"]}}
    with django_assert_max_num_queries(3):  # the session's two and one for the rows
        assert staff_client.get(live["live-url"], **check).status_code == 304

    bump(waiting)
    changed = staff_client.get(live["live-url"], **check)
    assert changed.status_code == 200 and changed.headers["ETag"] != live["live-etag"]


def test_a_list_of_waiting_processes_checks_slowly_and_one_of_finished_ones_not_at_all(staff_client):
    ProcessFactory(status="waiting")
    assert live_of(staff_client.get(reverse(LIST)).content.decode(), "live-list")["live"] == "slow"

    finished = reverse(LIST) + "?status__exact=completed"
    ProcessFactory(status="completed")
    assert live_of(staff_client.get(finished).content.decode(), "live-list")["live"] == "off"


def test_a_deleted_process_changes_the_list_s_tag(staff_client):
    task = running(is_task=True)
    live = live_of(staff_client.get(reverse(LIST)).content.decode(), "live-list")

    Process.objects.filter(pk=task.pk).delete()

    response = staff_client.get(live["live-url"], headers={"If-None-Match": live["live-etag"]})
    assert response.status_code == 200 and response.json()["count"] == 0


@pytest.mark.parametrize(("ids", "message"), [
    ("not-an-id", "ids: process ids separated by commas."),
    (",".join(["0" * 32] * 101), "At most 100 ids, not 101."),
])
def test_the_list_check_refuses_what_is_not_a_list_of_ids(staff_client, ids, message):
    response = staff_client.get(reverse("admin:processes_process_live"), {"ids": ids})

    assert response.status_code == 400 and response.json() == {"detail": message}


def test_the_list_check_is_for_staff_only(client):
    client.force_login(UserFactory(is_staff=False))

    response = client.get(reverse("admin:processes_process_live"), {"ids": ""})

    assert response.status_code == 302 and "/admin/login/" in response.headers["Location"]


# --- the counts ----------------------------------------------------------------------------------------
def test_the_list_s_counts_carry_the_live_contract_with_zero_counts_hidden(staff_client):
    ProcessFactory(status="failed")
    ProcessFactory(status="completed")

    html = staff_client.get(reverse(LIST)).content.decode()

    assert re.search(r'<li data-live-hide-zero="failed"><a data-live-count="failed" data-live-template="failed: '
                     r'\{n\}" data-live-attention="failed"', html)
    assert re.search(r'<li data-live-hide-zero="waiting" hidden><a data-live-count="waiting" '
                     r'data-live-template="waiting: \{n\}" data-live-attention="waiting"', html)
    assert re.search(r'<li data-live-hide-zero="completed"><a data-live-count="completed" '
                     r'data-live-template="completed: \{n\}"\s+id=', html)  # never highlighted
    assert 'data-live-count="all" data-live-template="all: {n}"' in html
    assert 'data-counts-seconds="10" data-counts-idle-seconds="60"' in html


def test_the_index_loads_the_live_script_and_its_engine_box_and_dashboard_take_part(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()

    assert "processes/live.js" in html
    assert f'data-counts-url="{reverse("process-status-counts")}"' in html
    assert 'data-live-count="engine.running_processes"' in html
    # The dashboard's counts: grouped digits as the server writes them, highlighted once above 0 (failed, waiting).
    for status in ("failed", "waiting", "awaiting_callback", "suspended", "running"):
        assert f'<span class="dashboard-count-number" data-live-count="{status}" data-live-grouped>0</span>' in html
    highlighted = re.findall(r'data-live-attention="(\w+)" data-live-attention-classes="attention attention-\1"', html)
    assert highlighted == ["failed", "waiting"]


def test_a_check_of_the_counts_costs_a_bounded_number_of_queries(staff_client, django_assert_max_num_queries):
    ProcessFactory.create_batch(30, status="failed")
    ProcessFactory.create_batch(20, status="running")

    # The session's two, and the counts' sum (a fold of many delta rows, now and then, adds two).
    with django_assert_max_num_queries(5):
        response = staff_client.get(reverse("process-status-counts"))
    assert response.json()["counts"]["failed"] == 30 and response.json()["counts"]["running"] == 20
    with django_assert_max_num_queries(6):  # the engine's box: its settings row and the runs
        assert staff_client.get(reverse("api-engine-settings")).status_code == 200
