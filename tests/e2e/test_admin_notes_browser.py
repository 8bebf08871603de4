"""Staff in a real browser: leave a note on a process and find it in the list; retry a selection after its
confirmation page. Screenshots go to artifacts/screenshots/ (see conftest.py)."""

from __future__ import annotations

import re

import pytest

from processes.models import Process
from processes.services import start_process
from tests.e2e.test_admin_browser import PASSWORD, detail_url, log_in, open_page, status_in_db
from tests.processes import flows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(transactional_db):
    """A staff superuser who logs in through the admin's login form (log_in)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-notes", "e2e-notes@example.org", PASSWORD)

NOTE = "Vendor ticket 4711 is open for the failed push; do not retry before the vendor confirms the fix is live."


def test_staff_add_a_note_on_a_process_and_see_it_in_the_list(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by=staff.username)
    assert process.status == "failed"

    open_page(page, detail_url(live_server, process))
    assert page.locator("#process-note .process-note-none").inner_text() == "none"
    page.click("#process-note-edit summary")
    page.fill("#id_note", NOTE)
    shot("adding a note")
    page.click("#process-note-save")
    page.wait_for_url(detail_url(live_server, process))
    shot("process with its note")
    assert page.locator("#process-note-text").inner_text() == NOTE
    assert status_in_db(process) == "failed"  # the note changed nothing else

    open_page(page, f"{live_server.url}/admin/processes/process/")
    cell = page.locator(f"tr:has(a[href*='{process.process_id}']) .process-note-short")
    cell.scroll_into_view_if_needed()  # the list is wider than the window: its table scrolls sideways
    cell.hover()
    shot("list with the note")
    assert cell.inner_text() == NOTE[:59] + "…"
    assert cell.get_attribute("title") == NOTE


def test_staff_see_what_a_bulk_retry_will_do_before_it_does_it(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    flows.CONTROL["fail_times"] = 1
    failed = start_process("t_writes", by=staff.username)
    completed = start_process("t_writes", by=staff.username)
    assert (failed.status, completed.status) == ("failed", "completed")
    changelist = f"{live_server.url}/admin/processes/process/"

    open_page(page, changelist)
    for process in (failed, completed):
        page.check(f"input.action-select[value='{process.process_id}']")
    page.select_option("select[name=action]", "retry_selected")
    page.click("button[name=index]")
    page.wait_for_selector("#retry-selected-form")
    shot("bulk retry confirmation")
    assert f"{str(failed.process_id)[:8]}…" in page.locator("#retry-list").inner_text()
    assert "the external system said no" in page.locator("#retry-list").inner_text()
    assert "it is completed" in page.locator(f"#not-retried-{completed.process_id}").inner_text()
    assert status_in_db(failed) == "failed"  # nothing retried yet

    page.click("#confirm")
    page.wait_for_url(re.compile(r"/admin/processes/process/$"))
    shot("after the bulk retry")
    message = page.locator(".messagelist li").first.inner_text()
    assert message.startswith("Retried 1 process (now 1 completed). Not retried 1: ")
    assert Process.objects.get(pk=failed.pk).status == "completed"
