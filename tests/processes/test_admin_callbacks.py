"""The process admin's callbacks and timers: the box saying what a process waits for, and delivery by hand."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from processes.callbacks import add_progress, deliver
from processes.models import CallbackToken, Process
from processes.services import start_process
from tests.processes import wait_flows

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"ok": True, "device": "rtr-1"}


def detail_url(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def waiting_box(html: str) -> str:
    start = html.index('id="process-waiting"')
    return html[start:html.index("</div>", start)]


def awaiting(fake_system: Any) -> Process:
    process = start_process("t_callback", by="alice")
    assert process.status == "awaiting_callback"
    return process


# --- the waiting box -------------------------------------------------------------------------------------
def test_the_page_of_an_awaiting_process_shows_the_step_its_deadline_and_the_progress_newest_last(
        fake_system, staff_client):
    process = awaiting(fake_system)
    token = fake_system.last("deploy")["token"]
    add_progress(process.process_id, token, "config rendered")
    add_progress(process.process_id, token, "pushing to <rtr-1>")
    callback = CallbackToken.objects.get(process=process)

    html = staff_client.get(detail_url(process)).content.decode()

    box = waiting_box(html)
    assert html.index('id="process-waiting"') < html.index('id="process-timeline"')  # near the top
    assert "Awaiting the callback of step <strong>'Deploy config'</strong>" in box
    since = timezone.localtime(callback.issued_at).strftime("%Y-%m-%d %H:%M:%S")
    deadline = timezone.localtime(callback.deadline).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"since <time [^>]*>{since} UTC</time>\s*— deadline <time [^>]*>{deadline} UTC</time>", box)
    assert re.search(r'class="waiting-relative">\(in (9 min \d+ s|10 min)\)</span>', box)
    progress = re.findall(r"<li><time [^>]*>([\d: -]+)</time> <span class=\"progress-message\">([^<]*)</span>", box)
    assert [text for _, text in progress] == ["config rendered", "pushing to &lt;rtr-1&gt;"]  # newest last
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", moment) for moment, _ in progress)
    assert re.search(r'<tr class="step-row step-awaiting_callback" id="step-3">.*?'
                     r'status-awaiting_callback">awaiting callback</span>', html, re.S)


def test_the_waiting_box_takes_its_colours_from_the_admins_variables_so_dark_mode_works():
    styles = Path(settings.BASE_DIR, "templates/admin/processes/process/_styles.html").read_text()
    rules = [body for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", styles) if "process-waiting" in selector]
    colours = re.findall(r"(?:color|background|border[\w-]*)\s*:\s*([^;]+);", "".join(rules))
    assert colours and "var(--message-warning-bg)" in colours
    assert not [value for value in colours if "#" in value or "rgb" in value or re.search(r"\bwhite\b", value)]


def test_the_page_of_a_process_waiting_for_a_timer_says_until_when(staff_client, monkeypatch):
    start = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    monkeypatch.setitem(wait_flows.WINDOW, "start", start.isoformat())
    process = start_process("t_timer", by="alice")
    assert process.status == "waiting"

    html = staff_client.get(detail_url(process)).content.decode()

    box = waiting_box(html)
    assert '<div class="process-waiting waiting-timer" id="process-waiting">' in html
    until = timezone.localtime(start).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"Waiting for timer <strong>'Wait for the maintenance window'</strong>\s*"
                     rf"until <time [^>]*>{until} UTC</time>", box)
    assert re.search(r"\(in (59 min \d+ s|1 h)\)", box)
    # The timer's own row is a wait, not a failure.
    row = re.search(r'<tr class="step-row step-waiting[^"]*" id="step-3">', html)
    assert row and "step-failed" not in row.group(0)
    assert "a timer: the process waited here, holding no worker" in html


def test_a_process_that_waits_for_nothing_shows_no_box(fake_system, staff_client):
    process = awaiting(fake_system)
    deliver(process.process_id, None, GOOD, by="dave", reason="phoned")

    html = staff_client.get(detail_url(process)).content.decode()

    assert Process.objects.get(pk=process.pk).status == "completed"
    assert 'id="process-waiting"' not in html
