"""Staff read the process pages in the light, dark and automatic themes: every text stays readable.

Each page is opened with the admin's theme switch set (localStorage "theme") against the opposite system colour
scheme, and with "auto" on a dark system; the contrast of each piece of text with the colour behind it, as the
browser draws them, must be 4.5:1 or more (WCAG AA). Screenshots of each page in each theme are saved.
"""

from __future__ import annotations

from typing import Any

import pytest

from processes.models import Process, ProcessStatus, ProcessStep
from processes.services import start_process
from tests.e2e.conftest import Shots
from tests.e2e.looks import body_background, open_page, text_colours, themed_page
from tests.factories import ProcessFactory
from tests.processes import flows

pytestmark = pytest.mark.django_db(transaction=True)

# (name, the theme switch, the system's colour scheme, the page background the admin should then draw)
THEMES = [
    pytest.param("light", "light", "dark", [255, 255, 255], id="light"),
    pytest.param("dark", "dark", "light", [18, 18, 18], id="dark"),
    pytest.param("auto-dark", "auto", "dark", [18, 18, 18], id="auto-dark"),
]
AA = 4.5


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-looks", "e2e-looks@example.org", "e2e-looks-pw-41c9")


@pytest.fixture
def failed_with_changes() -> Process:
    """A failed process whose log also has a step that added, changed and removed keys of the state."""
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by="alice")
    assert process.status == "failed"
    last = ProcessStep.objects.filter(process=process, status="success").order_by("-id").first()
    state = dict(last.state_after())
    state.pop("workflow")
    state["created_by"] = "someone else"
    state["ticket"] = "INC-4711"
    ProcessStep.objects.create(process=process, name="Hand-made change", status="success", state=state,
                               created_by="test", started_at=last.started_at, completed_at=last.completed_at)
    return process


def unreadable(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in found if item["contrast"] < AA]


def shown_texts(found: list[dict[str, Any]]) -> str:
    return " | ".join(item["text"] for item in found)


@pytest.mark.parametrize(("name", "theme", "scheme", "background"), THEMES)
def test_a_failed_process_page_is_readable_in_every_theme(
        browser, live_server, staff, failed_with_changes, screenshot_dir, shot_numbers,
        name, theme, scheme, background):
    process = failed_with_changes
    with themed_page(browser, live_server, staff, theme=theme, scheme=scheme) as page:
        shot = Shots(page, screenshot_dir, shot_numbers)
        open_page(page, f"{live_server.url}/admin/processes/process/{process.process_id}/change/")
        page.click("#process-timeline tr.step-failed + tr.step-details summary")  # open the traceback
        shot(f"failed process {name}")
        assert body_background(page) == background  # the theme asked for is the one drawn

        # The failed step's row: its number, name, status, start, duration, who and attempt.
        row = text_colours(page, "#process-timeline tr.step-failed")
        assert "Write B then maybe fail" in shown_texts(row) and "alice" in shown_texts(row)
        assert unreadable(row) == []
        # Under it: the error, the traceback's toggle and the traceback.
        details = text_colours(page, "#process-timeline tr.step-failed + tr.step-details")
        texts = shown_texts(details)
        assert "RuntimeError: the external system said no" in texts and "Traceback" in texts
        assert any(item["tag"] == "pre" and item["text"].startswith("Traceback (most") for item in details)
        assert unreadable(details) == []
        # The reason at the top, the status badges, the action buttons.
        top = text_colours(page, "#process-failed-reason, #process-status, .status-badge, .object-tools")
        assert "Retry" in shown_texts(top) and unreadable(top) == []
        # What each step changed: added, changed and removed rows.
        diff = text_colours(page, "#process-timeline table.state-diff td")
        kinds = {item["text"] for item in diff if item["cls"] == "diff-kind"}
        assert kinds == {"+ added", "~ changed", "\N{MINUS SIGN} removed"}
        assert unreadable(diff) == [], unreadable(diff)
        # And everything else on the page, whatever it is.
        assert unreadable(text_colours(page, "#content")) == []

        # One step's page: its diff and state.
        open_page(page, f"{live_server.url}/admin/processes/process/{process.process_id}/steps/4/")
        shot(f"step with changes {name}")
        step = text_colours(page, "#content")
        assert "~ changed" in shown_texts(step) and unreadable(step) == []


@pytest.mark.parametrize(("name", "theme", "scheme", "background"), THEMES)
def test_the_process_list_pills_and_badges_are_readable_in_every_theme(
        browser, live_server, staff, screenshot_dir, shot_numbers, name, theme, scheme, background):
    for status in ProcessStatus.values:
        ProcessFactory(status=status, last_step="Deploy config",
                       failed_reason="provisioning said no" if status == "failed" else "")
    with themed_page(browser, live_server, staff, theme=theme, scheme=scheme) as page:
        shot = Shots(page, screenshot_dir, shot_numbers)
        open_page(page, f"{live_server.url}/admin/processes/process/")
        shot(f"process list {name}")
        assert body_background(page) == background

        pills = text_colours(page, "#status-counts a")
        attention = [item for item in pills if "attention" in item["cls"]]
        assert {item["text"].split(":")[0] for item in attention} == {"failed", "waiting"}
        assert unreadable(pills) == [], unreadable(pills)
        badges = text_colours(page, "#result_list .status-badge")
        assert len(badges) == len(ProcessStatus.values) and unreadable(badges) == [], unreadable(badges)
        assert unreadable(text_colours(page, "#content")) == []


@pytest.mark.parametrize(("name", "theme", "scheme", "background"), THEMES)
def test_an_out_of_sync_subscription_page_is_readable_in_every_theme(
        browser, live_server, staff, screenshot_dir, shot_numbers, name, theme, scheme, background):
    from tests.processes.conftest import new_active_node
    from workflows.node.demo import load_demo_products

    load_demo_products()
    node = new_active_node("rtr-dark")
    start_process("modify_node", subscription_id=node.pk, by="alice")  # holds it, out of sync, at its form
    with themed_page(browser, live_server, staff, theme=theme, scheme=scheme) as page:
        shot = Shots(page, screenshot_dir, shot_numbers)
        open_page(page, f"{live_server.url}/admin/subscriptions/subscription/{node.pk}/change/")
        shot(f"out of sync subscription {name}")
        assert body_background(page) == background

        banner = text_colours(page, "#out-of-sync-banner")
        assert "Out of sync" in shown_texts(banner) and "process" in shown_texts(banner)
        assert unreadable(banner) == [], unreadable(banner)
        assert unreadable(text_colours(page, "#content")) == []
