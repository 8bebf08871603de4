"""The admin index's dashboard (the counts to watch, the completed/failed chart), the engine-paused banner on
every admin page, and the subscription page's Start buttons disabled while the engine is paused."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from processes.dashboard import PERIODS, settled_per_period
from processes.dashboard_svg import layout
from processes.engine_settings import set_engine_paused
from processes.models import Process, ProcessStatusCount
from tests.factories import ProcessFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

INDEX = "/admin/"
SVG = "{http://www.w3.org/2000/svg}"


# --- helpers -------------------------------------------------------------------------------------------------
def settled(status: str, at: datetime, n: int = 1, workflow: Any = None) -> None:
    """`n` processes with `status` that stopped running at `at` (the trigger copies last_modified_at to settled_at)."""
    workflow = workflow or WorkflowFactory(name="t_dashboard")
    for _ in range(n):
        process = ProcessFactory(status=status, workflow=workflow)
        Process.objects.filter(pk=process.pk).update(last_modified_at=at)


def svg_of(html: str) -> ET.Element:
    match = re.search(r'<svg class="dashboard-svg".*?</svg>', html, re.S)
    assert match, "no chart on the page"
    return ET.fromstring(match.group(0))


def bars(svg: ET.Element) -> list[tuple[str, str]]:
    """Each bar's series and hover title."""
    return [
        (rect.get("class", "").split()[-1].removeprefix("bar-"), rect.find(f"{SVG}title").text)
        for rect in svg.iter(f"{SVG}rect") if "bar" in rect.get("class", "").split()
    ]


def count_link(html: str, status: str) -> tuple[str, int, str]:
    """The dashboard's count for `status`: its link, number and classes."""
    match = re.search(
        rf'<a id="dashboard-count-{status}" href="([^"]+)"\s+class="([^"]*)"[^>]*>\s*'
        r'<span class="dashboard-count-number"[^>]*>([\d,]+)</span>', html)
    assert match, f"no count for {status} on the dashboard"
    return match.group(1).replace("&amp;", "&"), int(match.group(3).replace(",", "")), match.group(2)


def nonzero(buckets: list[Any]) -> dict[str, tuple[int, int]]:
    return {b.start.strftime("%Y-%m-%d %H:%M"): (b.completed, b.failed) for b in buckets if b.completed or b.failed}


# --- the counts ----------------------------------------------------------------------------------------------
def test_the_index_shows_each_watched_count_linked_to_the_list_filtered_by_it(staff_client) -> None:
    for status, n in (("failed", 3), ("waiting", 2), ("awaiting_callback", 1), ("suspended", 4), ("completed", 5)):
        ProcessFactory.create_batch(n, status=status)

    html = staff_client.get(INDEX).content.decode()

    expected = {"failed": 3, "waiting": 2, "awaiting_callback": 1, "suspended": 4, "running": 0}
    for status, n in expected.items():
        url, shown, classes = count_link(html, status)
        assert url == f"/admin/processes/process/?status__exact={status}"
        assert shown == n
        # Failed and waiting processes need a human: highlighted when there are any.
        assert ("attention" in classes) == (status in ("failed", "waiting"))
    assert "dashboard-count-completed" not in html
    listed = staff_client.get("/admin/processes/process/?status__exact=failed")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 3


@pytest.mark.requires_postgres
def test_the_counts_are_the_kept_counters_not_a_count_of_the_processes(staff_client) -> None:
    ProcessFactory.create_batch(2, status="failed")
    # A delta row as the triggers write them: a COUNT(*) over the processes would still say 2.
    ProcessStatusCount.objects.create(status="failed", delta=1000)

    with CaptureQueriesContext(connection) as queries:
        html = staff_client.get(INDEX).content.decode()

    assert count_link(html, "failed")[1] == 1002
    assert re.search(r'<span class="dashboard-count-number"[^>]*>1,002</span>', html)
    counting = [q["sql"] for q in queries.captured_queries
                if 'FROM "processes_process"' in q["sql"] and "COUNT(" in q["sql"] and "settled_at" not in q["sql"]]
    assert counting == []


def test_staff_who_may_not_see_processes_get_no_dashboard_but_the_engine_status(client) -> None:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client.force_login(user)

    html = client.get(INDEX).content.decode()

    assert 'id="engine-widget"' in html
    assert 'id="process-dashboard"' not in html


def test_the_index_says_who_paused_the_engine_and_since_when(staff_client) -> None:
    set_engine_paused(True, by="night-op")

    html = staff_client.get(INDEX).content.decode()

    widget = re.sub(r"\s+", " ", re.search(r'id="engine-widget".*?</table>', html, re.S).group(0))
    assert ">Paused</a>" in widget
    assert re.search(r"Paused since <time [^>]+>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time> \((just now|\d+ s ago)\), "
                     r"paused by night-op", widget), widget


# --- the chart's data ----------------------------------------------------------------------------------------
def test_per_hour_counts_completed_and_failed_processes_in_the_hour_they_settled() -> None:
    now = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)
    settled("completed", datetime(2026, 3, 10, 14, 5, tzinfo=UTC))            # this hour, so far
    settled("completed", datetime(2026, 3, 10, 13, 59, 59, tzinfo=UTC), n=2)
    settled("failed", datetime(2026, 3, 10, 13, 0, tzinfo=UTC))               # on the boundary: 13:00-14:00
    settled("failed", datetime(2026, 3, 10, 12, 30, tzinfo=UTC), n=3)
    settled("completed", datetime(2026, 3, 8, 15, 10, tzinfo=UTC))            # the first of the 48 hours
    settled("completed", datetime(2026, 3, 8, 14, 59, tzinfo=UTC))            # before the window
    settled("aborted", datetime(2026, 3, 10, 14, 10, tzinfo=UTC))             # neither completed nor failed
    settled("waiting", datetime(2026, 3, 10, 14, 10, tzinfo=UTC))

    buckets = settled_per_period(PERIODS["hour"], now=now)

    assert len(buckets) == 48
    assert buckets[0].start == datetime(2026, 3, 8, 15, tzinfo=UTC)
    assert buckets[-1].start == datetime(2026, 3, 10, 14, tzinfo=UTC) and buckets[-1].current
    assert not any(b.current for b in buckets[:-1])
    assert nonzero(buckets) == {
        "2026-03-08 15:00": (1, 0),
        "2026-03-10 12:00": (0, 3),
        "2026-03-10 13:00": (2, 1),
        "2026-03-10 14:00": (1, 0),
    }


def test_per_day_counts_by_local_day_in_the_sites_time_zone(settings) -> None:
    settings.TIME_ZONE = "Europe/Amsterdam"  # UTC+1 in March
    now = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    settled("completed", datetime(2026, 3, 9, 23, 30, tzinfo=UTC))   # 00:30 on the 10th, Amsterdam: today
    settled("completed", datetime(2026, 3, 9, 22, 30, tzinfo=UTC), n=2)  # 23:30 on the 9th
    settled("failed", datetime(2026, 3, 3, 23, 0, tzinfo=UTC))       # midnight starting the 4th: the first day
    settled("failed", datetime(2026, 3, 3, 22, 59, tzinfo=UTC))      # the 3rd: before the 7 days

    buckets = settled_per_period(PERIODS["day"], now=now)

    assert [b.start.strftime("%d") for b in buckets] == ["04", "05", "06", "07", "08", "09", "10"]
    assert all(b.start.hour == 0 and str(b.start.tzinfo) == "Europe/Amsterdam" for b in buckets)
    assert nonzero(buckets) == {"2026-03-04 00:00": (0, 1), "2026-03-09 00:00": (2, 0), "2026-03-10 00:00": (1, 0)}
    assert buckets[-1].current


def test_hours_stay_one_hour_long_across_a_clock_change(settings) -> None:
    settings.TIME_ZONE = "Europe/Amsterdam"  # 02:00 became 03:00 on 29 March 2026
    buckets = settled_per_period(PERIODS["hour"], now=datetime(2026, 3, 29, 12, 0, tzinfo=UTC))

    assert len({b.start for b in buckets}) == 48
    # In UTC: Python subtracts two times of one zone on the wall clock (01:00 to 03:00 is "2 hours" there).
    assert all(b.end.astimezone(UTC) - b.start.astimezone(UTC) == timedelta(hours=1) for b in buckets)
    labels = [b.start.strftime("%H") for b in buckets]
    # 01:00 UTC on the 29th: 02:00 local did not exist that night, so 01:00 is followed by 03:00.
    assert labels[-14:-10] == ["00", "01", "03", "04"]


@pytest.mark.requires_postgres
def test_the_chart_query_reads_the_window_through_the_settled_index() -> None:
    settled("completed", timezone.now() - timedelta(hours=1))
    with CaptureQueriesContext(connection) as queries:
        settled_per_period(PERIODS["day"])
    (query,) = [q["sql"] for q in queries.captured_queries]

    with transaction.atomic(), connection.cursor() as cursor:
        # A test table is tiny, where reading it all is cheapest; at scale the range is what decides.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "process_settled" in plan, plan
    assert re.search(r"Index Cond: \(\(settled_at >= .*settled_at < ", plan), plan


# --- the SVG -------------------------------------------------------------------------------------------------
def test_the_chart_has_a_bar_with_its_exact_count_for_each_hour_with_completed_or_failed(staff_client) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    settled("completed", hour - timedelta(hours=2) + timedelta(minutes=10), n=3)
    settled("failed", hour - timedelta(hours=2) + timedelta(minutes=20))
    settled("failed", hour - timedelta(hours=5) + timedelta(minutes=1), n=2)

    svg = svg_of(staff_client.get(INDEX).content.decode())

    assert svg.get("data-period") == "hour"
    found = bars(svg)
    assert sorted((series, title.rsplit(": ", 1)[1]) for series, title in found) == [
        ("completed", "3 completed"), ("failed", "1 failed"), ("failed", "2 failed")]
    start = timezone.localtime(hour - timedelta(hours=2))
    assert any(t.endswith(f"{start:%H:%M}\u2013{start + timedelta(hours=1):%H:%M}: 3 completed") for _, t in found)
    columns = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "chart-column"]
    assert len(columns) == 48
    legend = " ".join(t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "chart-legend-label")
    assert legend == "completed: 3 failed: 3"


def test_per_day_the_chart_has_seven_days_and_the_period_links_switch(staff_client) -> None:
    settled("completed", timezone.now() - timedelta(days=3), n=4)

    html = staff_client.get(INDEX + "?chart=day").content.decode()
    svg = svg_of(html)

    assert svg.get("data-period") == "day"
    assert len([r for r in svg.iter(f"{SVG}rect") if r.get("class") == "chart-column"]) == 7
    assert [title.rsplit(": ", 1)[1] for _, title in bars(svg)] == ["4 completed"]
    assert 'href="?chart=hour"' in html and 'href="?chart=day"' not in html
    # Anything else in ?chart= shows hours, without an error.
    assert svg_of(staff_client.get(INDEX + "?chart=<script>").content.decode()).get("data-period") == "hour"


def test_an_empty_chart_says_so_and_a_tall_one_keeps_whole_number_axis_labels() -> None:
    period = PERIODS["hour"]
    empty = layout(settled_per_period(period), period)
    assert empty.empty and empty.bars == []
    assert [t.label for t in empty.y_ticks] == ["0", "1"]

    settled("completed", timezone.now(), n=7)
    chart = layout(settled_per_period(period), period)
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8"]
    (bar,) = chart.bars
    assert bar.height == pytest.approx((chart.plot_bottom - chart.plot_top) * 7 / 8)


def test_the_index_page_costs_a_bounded_number_of_queries(staff_client, django_assert_max_num_queries) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for back in range(0, 40, 3):
        settled("completed", hour - timedelta(hours=back), n=2)
        settled("failed", hour - timedelta(hours=back))
    ProcessFactory(status="running", leased=True)
    set_engine_paused(True, by="night-op")

    # Session, user, the banner's switch, the engine widget's switch and leases, the status counters, the
    # chart's one grouped query, the recent actions: however many processes there are.
    with django_assert_max_num_queries(8):
        response = staff_client.get(INDEX)

    assert response.status_code == 200 and len(bars(svg_of(response.content.decode()))) == 28


# --- the paused banner ---------------------------------------------------------------------------------------
BANNER_PAGES = [
    INDEX,
    "/admin/processes/process/",
    "/admin/processes/enginesettings/",
    "/admin/subscriptions/subscription/",
    "/admin/auth/user/",
]


def test_no_banner_while_the_engine_runs(staff_client) -> None:
    set_engine_paused(True, by="night-op")
    set_engine_paused(False, by="night-op")
    for url in BANNER_PAGES:
        response = staff_client.get(url)
        assert response.status_code == 200
        assert 'id="engine-paused-banner"' not in response.content.decode(), url


def test_every_admin_page_says_who_paused_the_engine_and_when_with_a_link_to_the_engine(staff_client) -> None:
    set_engine_paused(True, by="night-op")
    paused_at = timezone.localtime(Process._meta.apps.get_model("processes", "EngineSettings").objects.get().changed_at)

    for url in BANNER_PAGES:
        html = staff_client.get(url).content.decode()
        banner = re.search(r'<div class="engine-paused-banner".*?</div>', html, re.S)
        assert banner, url
        text = re.sub(r"\s+", " ", banner.group(0))
        assert "The engine is paused</strong> by night-op since" in text
        assert f'{paused_at:%Y-%m-%d %H:%M:%S}' in text
        assert 'href="/admin/processes/enginesettings/"' in text


def test_the_banner_is_not_shown_to_visitors_who_are_not_logged_in(client) -> None:
    set_engine_paused(True, by="night-op")
    html = client.get("/admin/login/").content.decode()
    assert 'id="engine-paused-banner"' not in html and "night-op" not in html


# --- Start buttons while paused ------------------------------------------------------------------------------
def subscription_page(client: Client, subscription: Any) -> str:
    response = client.get(reverse("admin:subscriptions_subscription_change", args=[subscription.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_start_buttons_are_links_while_the_engine_runs(staff_client, active_node) -> None:
    html = subscription_page(staff_client, active_node)

    start = f"/admin/subscriptions/subscription/{active_node.pk}/start/validate_node/"
    assert f'<a id="start-validate_node" class="button" href="{start}">Start</a>' in html
    assert 'id="start-paused-reason"' not in html and "disabled" not in html.split('id="startable-workflows"')[1]


def test_start_buttons_are_disabled_with_the_reason_while_the_engine_is_paused(staff_client, active_node) -> None:
    set_engine_paused(True, by="night-op")

    with CaptureQueriesContext(connection) as queries:
        html = subscription_page(staff_client, active_node)

    button = re.search(r'<button type="button" id="start-validate_node"[^>]*>Start</button>', html)
    assert button and " disabled" in button.group(0)
    assert "/start/validate_node/" not in html.split('id="startable-workflows"')[1]
    reason = re.search(r'<p class="start-paused-reason" id="start-paused-reason">(.*?)</p>', html, re.S)
    assert reason
    assert re.fullmatch(
        r"Start is disabled: the engine is paused \(by night-op since \d{4}-\d\d-\d\d \d\d:\d\d UTC\): "
        r"nothing can start until it is resumed\.", reason.group(1))
    # The banner and the buttons read the switch once for the page.
    assert len([q for q in queries.captured_queries if "processes_enginesettings" in q["sql"]]) == 1


def test_a_start_posted_while_the_engine_is_paused_is_refused_and_creates_nothing(staff_client, active_node) -> None:
    set_engine_paused(True, by="night-op")

    response = staff_client.post(
        f"/admin/subscriptions/subscription/{active_node.pk}/start/validate_node/", {}, follow=True)

    assert Process.objects.count() == 0
    assert any("the engine is paused" in str(m) for m in response.context["messages"])
    assert 'id="engine-paused-banner"' in response.content.decode()
