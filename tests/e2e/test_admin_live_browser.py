"""Live admin pages in a real browser: a running process's page, the list and the counts follow it to its end by
themselves, and a finished process's page asks the server nothing.

A process hangs in its step "Write, then hang while the hang file exists" (tests/processes/flows.py) in a thread of
the test, while the browser watches; removing the hang file lets it complete. The page is never reloaded by the test.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import expect

from processes.models import Process
from processes.services import start_process
from tests.e2e.test_admin_browser import PASSWORD, detail_url, log_in, open_page
from tests.factories import ProcessFactory

pytestmark = pytest.mark.django_db(transaction=True)

HANGING_STEP = "Write, then hang while the hang file exists"
SETTLES_MS = 10_000  # a check every 2 s, and a reload, on a slow machine


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-live", "e2e-live@example.org", PASSWORD)


@pytest.fixture(autouse=True)
def quick_counts(settings):
    # The counts' check every second (10 s by default): the test waits for it.
    settings.ORCHESTRATOR = {"LIVE_COUNTS_SECONDS": 1.0}


@dataclass
class Hanging:
    process_id: str
    release: Callable[[], None]  # the step ends, the process completes, its thread is gone


@contextmanager
def a_hanging_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hanging]:
    """A t_killable process inside its hanging step, run by a thread of the test (the inline executor)."""
    folder = tmp_path / f"hang-{time.monotonic_ns()}"
    folder.mkdir()
    monkeypatch.setenv("ENGINE_TEST_DIR", str(folder))
    hang = folder / "all.hang"
    hang.touch()

    def run() -> None:
        try:
            start_process("t_killable", by="e2e-live")
        finally:
            connection.close()  # the test database is flushed after the test: no connection may linger

    thread = threading.Thread(target=run, name="hanging-process", daemon=True)
    thread.start()

    def release() -> None:
        hang.unlink(missing_ok=True)
        thread.join(30)
        assert not thread.is_alive(), "the process did not finish its step"

    try:
        deadline = time.monotonic() + 30
        while not (inside := list(folder.glob("*.inside"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inside, "the process never reached its hanging step"
        yield Hanging(inside[0].stem, release)
    finally:
        release()


def background(page, selector: str) -> str:
    return page.evaluate(f"getComputedStyle(document.querySelector({selector!r})).backgroundColor")


def admin_colour(page, variable: str) -> str:
    """What one of the admin's colour variables comes to in the current theme, as the browser computes colours."""
    return page.evaluate(
        """variable => {
            const probe = document.body.appendChild(document.createElement("div"));
            probe.style.background = `var(${variable})`;
            const colour = getComputedStyle(probe).backgroundColor;
            probe.remove();
            return colour;
        }""",
        variable,
    )


def test_a_running_process_page_shows_its_step_ticking_then_completed_without_a_reload(
    page, shot, live_server, staff, tmp_path, monkeypatch
):
    log_in(page, shot, live_server, staff)
    with a_hanging_process(tmp_path, monkeypatch) as hanging:
        process = Process.objects.get(pk=hanging.process_id)
        open_page(page, detail_url(live_server, process))
        assert page.locator("#process-live").get_attribute("data-live") == "fast"
        line = page.locator("#running-step")
        expect(line).to_contain_text(f"running step 3 '{HANGING_STEP}' since ")
        elapsed = page.locator("#running-step .running-elapsed")
        first = elapsed.inner_text()
        expect(elapsed).not_to_have_text(first, timeout=3_000)  # it ticks, client-side
        expect(page.locator("#process-live [data-live-note]")).to_contain_text("checked for changes every 2 s")
        shot("running process, its step ticking")
        assert page.locator("#process-status").inner_text() == "running"
        page.emulate_media(color_scheme="dark")
        assert background(page, "#running-step") == admin_colour(page, "--darkened-bg")  # the theme's, not ours
        shot("running process, dark theme")
        page.emulate_media(color_scheme="light")

        hanging.release()
        assert Process.objects.get(pk=process.pk).status == "completed"

        expect(page.locator("#process-status")).to_have_text("completed", timeout=SETTLES_MS)
    shot("the running process completed by itself")
    expect(page.locator("#running-step")).to_have_count(0)
    assert page.locator("#process-live").get_attribute("data-live") == "off"
    assert page.locator("#step-5").inner_text().split()[:2] == ["5", "Done"]


def test_a_completed_process_page_asks_the_server_nothing(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    process = start_process("t_writes", by="e2e-live")
    assert Process.objects.get(pk=process.pk).status == "completed"
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    open_page(page, detail_url(live_server, process))
    # What the page itself loads (its styles, scripts, the browser's favicon) may still be arriving.
    page.wait_for_load_state("networkidle")
    loaded = len(requests)
    page.wait_for_timeout(3_500)

    assert page.locator("#process-live").get_attribute("data-live") == "off"
    assert requests[loaded:] == []
    assert not [url for url in requests if "/api/" in url]
    shot("completed process, no checks")


def test_the_index_and_the_list_follow_a_process_to_its_end_by_themselves(
    page, shot, live_server, staff, tmp_path, monkeypatch
):
    log_in(page, shot, live_server, staff)
    index = f"{live_server.url}/admin/"
    with a_hanging_process(tmp_path, monkeypatch) as hanging:
        open_page(page, index)
        running = page.locator("#engine-widget [data-live-count='engine.running_processes']")
        expect(running).to_have_text("1 running process")
        on_dashboard = page.locator("#dashboard-count-running .dashboard-count-number")
        expect(on_dashboard).to_have_text("1")
        failed = page.locator("#dashboard-count-failed")
        expect(failed).not_to_have_class(re.compile(r"\battention\b"))
        page.evaluate("window.notReloaded = true")
        shot("index with a running process")
        hanging.release()
        ProcessFactory(status="failed")  # and elsewhere, one fails
        expect(running).to_have_text("0 running processes", timeout=SETTLES_MS)
        expect(on_dashboard).to_have_text("0", timeout=SETTLES_MS)
        expect(failed.locator(".dashboard-count-number")).to_have_text("1")
        expect(failed).to_have_class(re.compile(r"\battention attention-failed\b"))  # highlighted, as on a reload
        assert page.evaluate("window.notReloaded === true")  # updated in place
        shot("index once it completed and another failed")

    with a_hanging_process(tmp_path, monkeypatch) as hanging:
        open_page(page, f"{live_server.url}/admin/processes/process/")
        row = page.locator("#result_list tbody tr", has_text=hanging.process_id[:8])
        expect(row).to_contain_text("running")
        completed = page.locator("#status-count-completed")
        expect(completed).to_have_text("completed: 1")
        expect(page.locator("#status-count-running")).to_have_text("running: 1")
        shot("list with a running process")
        hanging.release()
        expect(row).to_contain_text("completed", timeout=SETTLES_MS)
        expect(completed).to_have_text("completed: 2")
        expect(page.locator("#status-count-running")).to_be_hidden()
        assert page.locator("#live-list").get_attribute("data-live") == "off"
        shot("list once it completed")

    # Someone choosing rows: the page offers a reload instead of losing the choice.
    with a_hanging_process(tmp_path, monkeypatch) as hanging:
        open_page(page, f"{live_server.url}/admin/processes/process/")
        row = page.locator("#result_list tbody tr", has_text=hanging.process_id[:8])
        row.locator("input.action-select").check()
        hanging.release()
        note = page.locator("#live-list [data-live-note]")
        expect(note).to_contain_text("Changed since this page was loaded.", timeout=SETTLES_MS)
        expect(row).to_contain_text("running")
        assert row.locator("input.action-select").is_checked()
        shot("list changed while a row is selected")
        note.locator("a.live-reload").click()
        expect(row).to_contain_text("completed")


def test_a_process_page_says_when_it_cannot_check_backs_off_and_stops_once_logged_out(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    process = ProcessFactory(status="running", workflow_version=["Start", "Deploy config", "Done"], current_step=1)
    api = f"**/api/processes/{process.process_id}/"
    checks: list[str] = []
    page.on("request", lambda request: checks.append(request.url) if "/api/" in request.url else None)
    note = page.locator("#process-live [data-live-note]")

    page.route(api, lambda route: route.fulfill(status=500, body="boom"))
    open_page(page, detail_url(live_server, process))
    expect(note).to_contain_text("Could not check for changes (the server answered 500); trying again in 4 s")
    shot("process page that cannot check")
    page.unroute(api)
    expect(note).to_have_text("Live: checked for changes every 2 s", timeout=SETTLES_MS)  # and on it goes

    page.route(api, lambda route: route.fulfill(status=401, body="{}"))
    expect(note).to_contain_text("Live updates stopped: you are no longer logged in", timeout=SETTLES_MS)
    shot("process page logged out")
    seen = len(checks)
    page.wait_for_timeout(4_500)
    assert len(checks) == seen  # no more checks
    assert page.locator("#process-status").inner_text() == "running"


def test_a_hidden_tab_checks_nothing_and_checks_at_once_when_shown_again(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    process = ProcessFactory(status="running", workflow_version=["Start", "Deploy config", "Done"], current_step=1)
    checks: list[float] = []
    page.on("request", lambda request: checks.append(time.monotonic()) if "/api/" in request.url else None)
    open_page(page, detail_url(live_server, process))
    # What the browser says when the operator switches to another tab (headless Chromium never does by itself).
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => window.tabState});
        window.tabState = "visible";
    }""")
    page.wait_for_timeout(2_500)
    assert checks, "a running process's page checks every 2 s"

    page.evaluate("() => { window.tabState = 'hidden'; document.dispatchEvent(new Event('visibilitychange')); }")
    page.wait_for_timeout(2_500)  # a check that was on its way may still land
    hidden_at = len(checks)
    page.wait_for_timeout(4_500)
    assert len(checks) == hidden_at
    expect(page.locator("#process-live [data-live-note]")).to_have_text("Paused while this tab is hidden")

    shown = time.monotonic()
    page.evaluate("() => { window.tabState = 'visible'; document.dispatchEvent(new Event('visibilitychange')); }")
    expect(page.locator("#process-live [data-live-note]")).to_have_text("Live: checked for changes every 2 s")
    assert checks[-1] >= shown and checks[-1] - shown < 1.5  # at once, not at the next tick
