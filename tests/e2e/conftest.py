"""The browser for the admin end-to-end tests: Debian's Chromium driven by Playwright, headless.

No browser is downloaded (`playwright install` is not used): the tests drive /usr/bin/chromium from the
`chromium` Debian package. Without it the tests skip locally with the command that installs it; under
CI=true a missing browser fails the run, as a skipped browser test would hide an untested admin.
Every page a test looks at is saved, in visiting order, to artifacts/screenshots/ (01-login.png, ...).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import flows

# E2E_CHROMIUM points elsewhere on systems where the binary has another name (chromium-browser).
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium's sandbox refuses to run as root, and CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: this machine's network is closed and Chromium's connections to Google are refused.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """Chromium for this package's tests only: Playwright is stopped before the rest of the suite runs."""
    if not Path(CHROMIUM).is_file():
        reason = (
            f"the admin browser tests need Chromium at {CHROMIUM}: install it with "
            f"`sudo apt-get update && sudo apt-get install -y chromium` (no Playwright browser download)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio event loop running in the test's thread while it is started;
    # Django sees that loop and refuses ORM calls from this thread (SynchronousOnlyOperation). The ORM calls
    # made here (creating the user, starting processes, reading their status, pytest-django's flush) are
    # ordinary blocking calls made between browser actions, never from a coroutine on that loop, so they
    # are safe: allow them, for as long as Playwright runs (this package), then restore Django's check.
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


# Session-scoped: with the suite spread over test processes, a process may run browser test files between other
# packages' files, and a package-scoped fixture would be set up again each time, emptying the folder again.
@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """artifacts/screenshots/, emptied of the last run's pictures so the numbers tell this run's order.

    With the suite spread over test processes (`make test`, pytest-xdist), each process has a folder of its own
    in it (gw0/, gw1/...): their numbers do not collide, and none empties another's pictures.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    folder = SCREENSHOTS / worker if worker else SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


@pytest.fixture(scope="session")
def shot_numbers() -> Iterator[int]:
    """One numbering across all the browser tests, so the files sort in the order the pages were visited."""
    return itertools.count(1)


class Shots:
    """Saves a full-page screenshot as NN-name.png: `shot("failed process")` -> 03-failed-process.png."""

    def __init__(self, page, directory: Path, numbers: Iterator[int]) -> None:
        self.page, self.directory, self.numbers = page, directory, numbers

    def __call__(self, name: str) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.directory / f"{next(self.numbers):02d}-{slug}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser, screenshot_dir):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shot(page, screenshot_dir, shot_numbers) -> Shots:
    return Shots(page, screenshot_dir, shot_numbers)


@pytest.fixture(autouse=True)
def reset_flow_control():
    flows.CONTROL.update(fail_times=0, retry_fail_times=0)
    yield
    flows.CONTROL.update(fail_times=0, retry_fail_times=0)
