"""The process list fits a 1366 x 768 laptop screen: every key column in view, no sideways scrolling, short rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.e2e.conftest import Shots
from tests.e2e.looks import open_page, themed_page
from tests.factories import ProcessFactory, ProcessSubscriptionFactory, SubscriptionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db(transaction=True)

LAPTOP = {"width": 1366, "height": 768}
KEY_COLUMNS = ["process_and_status", "workflow_name", "subscription_links", "last_step_and_reason", "started",
               "duration"]
STEP = "Check the port is free in the inventory and reserve it for the customer"
# A failure reason as long as real ones get, as the engine writes it: the step, then the system's whole answer.
LONG_REASON = (f"{STEP}: the provisioning system answered 500 Internal Server Error: "
               + "{'detail': 'interface xe-0/0/0 is locked by another change', 'trace': '" + "frame; " * 60 + "'}")


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-laptop", "e2e-laptop@example.org", "e2e-laptop-pw-8d1e")


@pytest.fixture
def busy_list(transactional_db) -> None:
    """A page of processes as a busy night leaves them: long names, long reasons, subscriptions everywhere."""
    now = timezone.now()
    names = ["modify_subscription_details", "task_validate_subscriptions", "create_node", "terminate_port"]
    statuses = ["failed", "completed", "running", "waiting", "awaiting_callback", "suspended", "aborted"]
    for n in range(21):
        status = statuses[n % len(statuses)]
        started = now - timedelta(minutes=7 * n + 1, seconds=n)
        process = ProcessFactory(
            workflow=WorkflowFactory(name=names[n % len(names)]), status=status, started_at=started,
            last_modified_at=started + timedelta(seconds=3 * n + 0.4), created_by=f"night-duty-operator-{n % 3}",
            last_step=STEP,
            failed_reason=LONG_REASON if status in ("failed", "waiting") else "",
            note="vendor ticket 4711 open with the provisioning team, do not retry before Monday" if n % 3 else "",
        )
        subscription = SubscriptionFactory(description=f"Port 10G rtr-amsterdam-{n:02d} xe-0/0/{n} uplink to ams-ix",
                                           customer_id=f"customer-2f8a9c41-{n:04d}")
        ProcessSubscriptionFactory(process=process, subscription=subscription)


def test_the_process_list_fits_a_1366_laptop_screen_with_its_key_columns(
        browser, live_server, staff, busy_list, screenshot_dir, shot_numbers):
    with themed_page(browser, live_server, staff, theme="light", scheme="light", viewport=LAPTOP) as page:
        shot = Shots(page, screenshot_dir, shot_numbers)
        open_page(page, f"{live_server.url}/admin/processes/process/")
        shot("process list at 1366")

        sizes = page.evaluate("""() => ({
            page: document.documentElement.scrollWidth,
            results: [document.querySelector('.results').scrollWidth, document.querySelector('.results').clientWidth],
            columns: Object.fromEntries([...document.querySelectorAll('#result_list thead th')].map(
                th => [th.className, [Math.round(th.getBoundingClientRect().left),
                                      Math.round(th.getBoundingClientRect().right)]])),
            rows: [...document.querySelectorAll('#result_list tbody tr')].map(tr => tr.getBoundingClientRect().height),
            line: parseFloat(getComputedStyle(document.querySelector('#result_list tbody td')).lineHeight),
        })""")
        assert sizes["page"] <= LAPTOP["width"]
        # Nor does the table scroll inside its box: every key column is in view as the page opens.
        assert sizes["results"][0] <= sizes["results"][1]
        for column in KEY_COLUMNS:
            [(left, right)] = [span for name, span in sizes["columns"].items() if f"column-{column}" in name.split()]
            assert 0 <= left < right <= LAPTOP["width"], column
        # Short rows: a long step name with a cut reason under it takes four lines at most.
        assert len(sizes["rows"]) == 21
        assert max(sizes["rows"]) <= 4 * sizes["line"] + 20, sizes  # the cell's padding and border

        reason = page.locator("#result_list .failed-reason").first
        assert reason.get_attribute("title") == LONG_REASON
        assert len(reason.inner_text()) <= 80
        started = page.locator("#result_list td.field-started time").first
        assert started.inner_text().endswith(" ago") and started.get_attribute("title").endswith(" UTC")
