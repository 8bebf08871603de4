"""The admin index's dashboard, the engine-paused banner and the disabled Start buttons in a real browser,
in the light and the dark theme (the admin's toggle keeps the choice in localStorage "theme")."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from processes.models import Process
from tests.factories import ProcessFactory, WorkflowFactory
from tests.processes.conftest import new_active_node
from workflows.node.demo import load_demo_products

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "e2e-dashboard-password-41c9"
# The admin's colours as Chromium computes them: --error-fg in the light and the dark theme.
ERROR_FG = {"light": "rgb(186, 33, 33)", "dark": "rgb(227, 95, 95)"}
BODY_BG = {"light": "rgb(255, 255, 255)", "dark": "rgb(18, 18, 18)"}


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-night-op", "night-op@example.org", PASSWORD)


@pytest.fixture
def history(transactional_db):
    """Processes that completed and failed in three hours of the last 48, and some to watch now."""
    workflow = WorkflowFactory(name="e2e_dashboard")
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for back, status, n in ((1, "completed", 6), (1, "failed", 2), (4, "completed", 3), (30, "failed", 1)):
        for _ in range(n):
            process = ProcessFactory(workflow=workflow, status=status)
            Process.objects.filter(pk=process.pk).update(last_modified_at=hour - timedelta(hours=back, minutes=-10))
    ProcessFactory.create_batch(2, workflow=workflow, status="waiting")
    ProcessFactory(workflow=workflow, status="suspended")


def open_page(page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, f"GET {url} answered {response and response.status}"


def log_in(page, live_server, user, theme: str) -> None:
    open_page(page, f"{live_server.url}/admin/login/")
    # The admin's theme toggle keeps the choice here; its script reads it before the page is drawn.
    page.evaluate("theme => localStorage.setItem('theme', theme)", theme)
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def computed(page, selector: str, prop: str) -> str:
    return page.locator(selector).first.evaluate(f"e => getComputedStyle(e).{prop}")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_dashboard_shows_counts_and_the_chart_then_the_paused_banner_and_disabled_start(
    page, shot, live_server, staff, history, theme
) -> None:
    load_demo_products()
    node = new_active_node("rtr-e2e")
    log_in(page, live_server, staff, theme)
    assert page.evaluate("document.documentElement.dataset.theme") == theme
    assert computed(page, "body", "backgroundColor") == BODY_BG[theme]

    # The counts, each a link to the list filtered by its status.
    assert page.locator("#dashboard-count-failed .dashboard-count-number").inner_text() == "3"
    assert page.locator("#dashboard-count-waiting .dashboard-count-number").inner_text() == "2"
    assert page.locator("#dashboard-count-suspended .dashboard-count-number").inner_text() == "1"
    # The chart: one bar per hour and series with processes, each with its exact count to hover.
    bars = page.locator("#dashboard-svg rect.bar")
    assert bars.count() == 4
    titles = sorted(t.split(": ")[-1] for t in bars.locator("title").all_text_contents())
    assert titles == ["1 failed", "2 failed", "3 completed", "6 completed"]
    assert page.locator("#chart-legend").is_visible()
    assert page.locator("#chart-legend text").all_text_contents() == ["completed: 9", "failed: 3"]
    assert computed(page, "#dashboard-svg rect.bar-failed", "fill") == ERROR_FG[theme]
    assert page.locator("#dashboard-svg rect.bar-failed").first.bounding_box()["height"] > 0
    shot(f"dashboard per hour {theme}")

    page.click("#chart-period-day")
    page.wait_for_url(re.compile(r"/admin/\?chart=day$"))
    assert page.locator("#dashboard-svg rect.chart-column").count() == 7
    by_series = {"completed": 0, "failed": 0}
    for bar in bars.all():
        by_series[bar.get_attribute("class").split("-")[-1]] += int(bar.get_attribute("data-count"))
    assert by_series == {"completed": 9, "failed": 3}  # on one or two days, as the clock falls
    shot(f"dashboard per day {theme}")

    page.click("#dashboard-count-failed")
    page.wait_for_url(re.compile(r"/admin/processes/process/\?status__exact=failed$"))
    assert page.locator("#result_list tbody tr").count() == 3

    # Pause the engine: every page says so, and the subscription's Start buttons are disabled, saying why.
    open_page(page, f"{live_server.url}/admin/processes/enginesettings/")
    page.click("#engine-pause")
    banner = page.locator("#engine-paused-banner")
    assert banner.is_visible()
    open_page(page, f"{live_server.url}/admin/")
    assert "The engine is paused by e2e-night-op since" in re.sub(r"\s+", " ", banner.inner_text())
    shot(f"dashboard engine paused {theme}")

    open_page(page, f"{live_server.url}/admin/subscriptions/subscription/{node.pk}/change/")
    assert banner.is_visible()
    start = page.locator("#start-validate_node")
    assert start.is_disabled()
    reason = page.locator("#start-paused-reason")
    assert reason.is_visible()
    assert re.search(r"the engine is paused \(by e2e-night-op since .+\): nothing can start until it is resumed",
                     reason.inner_text())
    shot(f"subscription start disabled {theme}")

    # Resumed from the banner's link: the banner goes, Start is a link again.
    banner.get_by_role("link", name="Engine settings").click()
    page.wait_for_url(re.compile(r"/admin/processes/enginesettings/$"))
    page.click("#engine-resume")
    assert page.locator("#engine-paused-banner").count() == 0
    open_page(page, f"{live_server.url}/admin/subscriptions/subscription/{node.pk}/change/")
    assert page.locator("#engine-paused-banner").count() == 0
    assert page.locator("#start-validate_node").evaluate("e => e.tagName") == "A"
