"""Every page a night-duty operator opens reads in the light and in the dark theme, and is kept as a screenshot.

The dashboard, the process list, a process awaiting its callback (its waiting box), a completed process with
a note, the page that delivers a callback by hand, the note's page, the engine page and the notifications: in
each theme the text must keep 4.5:1 contrast with what is drawn behind it (WCAG AA). The screenshots, light and
dark, are CI's artifacts (artifacts/screenshots/).
"""

from __future__ import annotations

import pytest

from processes.callbacks import deliver
from processes.services import set_note, start_process
from tests.e2e.conftest import Shots
from tests.e2e.looks import body_background, open_page, text_colours, themed_page
from tests.processes import wait_flows

pytestmark = pytest.mark.django_db(transaction=True)

THEMES = [
    pytest.param("light", "light", "dark", [255, 255, 255], id="light"),
    pytest.param("dark", "dark", "light", [18, 18, 18], id="dark"),
]


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-themes", "e2e-themes@example.org", "e2e-themes-pw-7b21")


@pytest.mark.parametrize(("name", "theme", "scheme", "background"), THEMES)
def test_every_operator_page_is_readable_in_both_themes(browser, live_server, staff, screenshot_dir, shot_numbers,
                                                         name, theme, scheme, background):
    wait_flows.FakeSystem.reset()
    awaiting = start_process("t_callback", by="alice")
    progress = wait_flows.FakeSystem.last("deploy")["progress_url"]
    from processes.callbacks import add_progress

    add_progress(awaiting.process_id, progress.rstrip("/").split("/")[-2], "pushing configuration to rtr-1")
    done = start_process("t_callback", by="bob")
    deliver(done.process_id, None, {"ok": True, "device": "rtr-2"}, by="bob", reason="confirmed by phone")
    set_note(done.process_id, "Customer asked for a call once it is live.", by=staff)
    pages = [
        ("dashboard", "/admin/"),
        ("process list", "/admin/processes/process/"),
        ("awaiting process", f"/admin/processes/process/{awaiting.process_id}/change/"),
        ("deliver by hand", f"/admin/processes/process/{awaiting.process_id}/deliver-callback/"),
        ("completed process with note", f"/admin/processes/process/{done.process_id}/change/"),
        ("note", f"/admin/processes/process/{done.process_id}/note/"),
        ("engine", "/admin/processes/enginesettings/"),
        ("notifications", "/admin/processes/notification/"),
    ]
    with themed_page(browser, live_server, staff, theme=theme, scheme=scheme) as page:
        shot = Shots(page, screenshot_dir, shot_numbers)
        for title, path in pages:
            open_page(page, f"{live_server.url}{path}")
            shot(f"{title} {name}")
            assert body_background(page) == background, title
            texts = text_colours(page, "#content")
            assert texts, f"{title}: nothing shown"
            unreadable = [item for item in texts if item["contrast"] < 4.5]
            assert unreadable == [], f"{title} ({name}): {unreadable}"
        # What each page is about is on it (so the contrast checks looked at the right page).
        open_page(page, f"{live_server.url}/admin/processes/process/{awaiting.process_id}/change/")
        box = " ".join(item["text"] for item in text_colours(page, "#content"))
        assert "Deploy config" in box and "pushing configuration to rtr-1" in box
