"""Staff fix processes from the admin in a real browser: retry a failed process, resume a suspended one.

Drives Debian's Chromium through Playwright against pytest-django's live server; every page it looks at
is saved to artifacts/screenshots/ in visiting order (see conftest.py).
"""

from __future__ import annotations

import re

import pytest

from processes.models import InputState, Process, ProcessStep
from processes.services import start_process
from tests.processes import flows

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "e2e-staff-password-7f3a"


@pytest.fixture
def staff(transactional_db):
    """A staff superuser with a known password: the browser logs in through the admin's login form."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("e2e-staff", "e2e-staff@example.org", PASSWORD)


def detail_url(live_server, process) -> str:
    return f"{live_server.url}/admin/processes/process/{process.process_id}/change/"


def open_page(page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, f"GET {url} answered {response and response.status}"


def log_in(page, shot, live_server, user) -> None:
    open_page(page, f"{live_server.url}/admin/login/")
    shot("login")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    shot("admin index")


def status_shown(page) -> str:
    return page.locator("#process-status").inner_text().strip()


def status_in_db(process) -> str:
    return Process.objects.get(pk=process.pk).status


def enter_colour(page, value: str, *, force: bool = False) -> None:
    """Put `value` in the resume form's `colour` field, whatever widget renders it.

    `force` is for a value the widget does not offer: a <select> (or radio buttons) cannot choose it, so
    the test adds it to the page the way a tampering or out-of-date browser would send it.
    """
    field = page.locator("[name=colour]").first
    tag = field.evaluate("e => e.tagName.toLowerCase()")
    kind = (field.get_attribute("type") or "").lower()
    if tag == "select":
        if force:
            page.evaluate(
                """value => {
                    const select = document.querySelector('select[name=colour]');
                    select.add(new Option(value, value));
                    select.value = value;
                }""",
                value,
            )
        else:
            page.select_option("select[name=colour]", value)
    elif kind == "radio":
        if force:
            page.evaluate(
                """value => {
                    const radio = document.querySelector('input[type=radio][name=colour]');
                    radio.value = value;
                    radio.checked = true;
                }""",
                value,
            )
        else:
            page.check(f"input[type=radio][name=colour][value={value}]")
    else:
        field.fill(value)


def test_staff_reads_the_error_of_a_failed_process_and_retries_it(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by=staff.username)
    assert process.status == "failed"

    open_page(page, detail_url(live_server, process))
    shot("failed process")
    assert status_shown(page) == "failed"
    assert "the external system said no" in page.locator(".step-error").first.inner_text()

    page.click("#action-retry")
    page.wait_for_url(re.compile(rf"/admin/processes/process/{process.process_id}/retry/$"))
    shot("retry confirmation")
    assert status_in_db(process) == "failed"  # the confirmation page changes nothing

    page.click("#confirm")
    page.wait_for_url(detail_url(live_server, process))
    shot("retried process")
    assert status_shown(page) == "completed"
    assert page.locator(".messagelist .success").count() >= 1
    assert status_in_db(process) == "completed"


def test_staff_resumes_a_suspended_process_through_its_form(page, shot, live_server, staff):
    log_in(page, shot, live_server, staff)
    process = start_process("t_input", by=staff.username)
    assert process.status == "suspended"
    steps, inputs = ProcessStep.objects.filter(process=process), InputState.objects.filter(process=process)
    rows_before = (steps.count(), inputs.count())

    open_page(page, detail_url(live_server, process))
    shot("suspended process")
    assert status_shown(page) == "suspended"

    page.click("#action-resume")
    resume_url = re.compile(rf"/admin/processes/process/{process.process_id}/resume/$")
    page.wait_for_url(resume_url)
    shot("resume form")

    # An invalid value: the form comes back (200) with the field's error, and the process is untouched.
    enter_colour(page, "purple", force=True)
    with page.expect_navigation() as refused:
        page.click("#confirm")
    assert refused.value.status == 200
    assert resume_url.search(page.url)
    shot("resume form with an error")
    errors = page.locator(".errorlist")
    assert errors.count() >= 1
    assert "purple" in errors.first.inner_text()  # "Select a valid choice. purple is not one of ..."
    assert status_in_db(process) == "suspended"
    assert (steps.count(), inputs.count()) == rows_before

    # A valid one: back on the detail page, completed with the colour given.
    enter_colour(page, "green")
    page.click("#confirm")
    page.wait_for_url(detail_url(live_server, process))
    shot("resumed process")
    assert status_shown(page) == "completed"
    assert status_in_db(process) == "completed"
    given = InputState.objects.get(process=process, input_type="user_input")
    assert (given.input, given.step_name) == ({"colour": "green"}, "Choose a colour")
    assert ProcessStep.objects.get(process=process, name="Needs a key").state_after()["seen"] == "green"


def test_staff_read_a_stuck_subscriptions_page_and_set_it_in_sync(page, shot, live_server, staff):
    from processes.services import abort_process
    from subscriptions.models import Subscription
    from tests.processes.conftest import new_active_node
    from workflows.node.demo import load_demo_products

    load_demo_products()
    node = new_active_node("rtr-e2e")
    holder = start_process("modify_node", subscription_id=node.pk, by="alice")
    abort_process(holder.process_id, by="alice", reason="wrong node")
    log_in(page, shot, live_server, staff)
    change_url = f"{live_server.url}/admin/subscriptions/subscription/{node.pk}/change/"

    open_page(page, change_url)
    shot("stuck subscription")
    banner = page.locator("#out-of-sync-banner").inner_text()
    assert "Out of sync" in banner and "No process holds it" in banner
    assert "rtr-e2e" in page.locator(".field-product_blocks").inner_text()
    assert page.locator("input[name=_save]").count() == 0  # the page is read-only

    page.click("#out-of-sync-banner >> text=set it in sync")
    page.wait_for_url(re.compile(rf"/admin/subscriptions/subscription/{node.pk}/set-in-sync/$"))
    page.fill("textarea[name=reason]", "checked the router by hand")
    page.click("#confirm")
    page.wait_for_url(change_url)
    shot("subscription set in sync")
    assert page.locator("#out-of-sync-banner").count() == 0
    assert Subscription.objects.get(pk=node.pk).insync is True
