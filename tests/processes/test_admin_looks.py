"""The process admin reads well: times with their zone, relative times, durations, progress, and theme colours."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from orchestrator_site import humanize
from processes.admin_actions import BADGE_COLOURS, BADGE_DEFAULT, BADGE_TEXT, badge
from processes.models import InputState, Process, ProcessStep
from processes.services import start_process
from tests.factories import ProcessFactory
from tests.processes import flows

runs = pytest.mark.django_db(transaction=True)
TEMPLATES = Path(settings.BASE_DIR, "templates")
STYLES = TEMPLATES / "admin/processes/process/_styles.html"
HEX = re.compile(r"#[0-9a-fA-F]{3,8}\b")


def detail_url(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def field(html: str, name: str) -> str:
    """The shown value of a read-only field of the process page."""
    match = re.search(rf'class="form-row field-{name}".*?<div class="readonly">(.*?)</div>', html, re.S)
    assert match, f"no field {name}"
    return match.group(1).strip()


def failed_process() -> Process:
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by="alice")
    assert process.status == "failed"
    return process


# --- the process page ---------------------------------------------------------------------------------
@runs
def test_a_failed_process_page_says_which_step_of_how_many_failed_at_which_attempt(staff_client):
    process = failed_process()
    names = process.workflow_version
    number = names.index("Write B then maybe fail") + 1

    html = staff_client.get(detail_url(process)).content.decode()

    assert field(html, "progress") == (f"step {number} of {len(names)} (&#x27;Write B then maybe fail&#x27;), "
                                       f"attempt 1 failed; a retry is attempt 2")
    # The timeline says the same: that step's row is attempt 1, and "Steps still to run" marks it as next.
    row = re.search(r'<tr class="step-row step-failed step-failed" id="step-\d+">(.*?)</tr>', html, re.S).group(1)
    assert "Write B then maybe fail" in row and row.rstrip().endswith("<td>1</td>")
    assert f'<li value="{number}" class="current">Write B then maybe fail (next)</li>' in html
    assert 'field-current_step' not in html and 'field-current_attempt' not in html


@runs
def test_the_process_page_shows_exact_times_with_the_zone_and_how_long_ago(staff_client):
    process = failed_process()
    Process.objects.filter(pk=process.pk).update(started_at=timezone.now() - timedelta(hours=2, minutes=5))
    process.refresh_from_db()

    html = staff_client.get(detail_url(process)).content.decode()

    started = field(html, "started_exact")
    assert f">{humanize.exact_time(process.started_at)}</time> · 2 h 5 min ago" in started
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", humanize.exact_time(process.started_at))
    # Still open (failed, waiting for a human): its duration runs on until now.
    assert re.fullmatch(r"2 h 5 min so far", field(html, "total_duration"))
    # The timeline: each step's start exactly (how long ago on hover) and its duration in a readable unit.
    step = ProcessStep.objects.filter(process=process).order_by("id").first()
    assert re.search(rf'<td class="step-started"><time datetime="[^"]+" title="([^"]+ ago|just now)">'
                     rf'{humanize.exact_time(step.started_at)}</time></td>', html)
    durations = re.findall(r'<td class="step-duration">([^<]*)</td>', html)
    assert durations and all(re.fullmatch(r"(&lt; 1|\d+) ms|\d+(\.\d)? s", text) for text in durations), durations


@runs
def test_a_completed_process_took_from_its_start_to_its_end_and_ran_all_its_steps(staff_client):
    process = start_process("t_writes", by="alice")
    assert process.status == "completed"
    Process.objects.filter(pk=process.pk).update(
        started_at=process.last_modified_at - timedelta(minutes=12, seconds=5))

    html = staff_client.get(detail_url(process)).content.decode()

    assert field(html, "total_duration") == "12 min 5 s"
    assert field(html, "progress") == f"completed: all {len(process.workflow_version)} steps ran"


# --- the list ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_list_shows_when_relative_with_the_exact_time_on_hover_the_duration_and_a_cut_reason(staff_client):
    reason = "Deploy config: the provisioning system answered 500: " + "stack frame, " * 30
    started = timezone.now() - timedelta(minutes=3, seconds=30)
    failed = ProcessFactory(status="failed", last_step="Deploy config", failed_reason=reason, started_at=started,
                            last_modified_at=started + timedelta(seconds=42), created_by="alice")
    done = ProcessFactory(status="completed", started_at=started, last_modified_at=started + timedelta(seconds=42))
    aborted = ProcessFactory(status="aborted", last_step="Deploy config", failed_reason="aborted by bob: wrong node",
                             started_at=started, last_modified_at=started + timedelta(hours=2, minutes=5))

    html = staff_client.get(reverse("admin:processes_process_changelist")).content.decode()

    rows = {pk: re.search(rf"<tr>.*?{str(pk)[:8]}.*?</tr>", html, re.S).group(0)
            for pk in (failed.pk, done.pk, aborted.pk)}
    exact = humanize.exact_time(started)
    for row in rows.values():  # a list says "3 min ago"; the exact time (with its zone) is on hover
        assert re.search(rf'<td class="field-started"><time datetime="[^"]+" title="{exact}">3 min ago</time>', row)
    assert '<div class="process-creator" title="alice">by alice</div>' in rows[failed.pk]
    assert '<td class="field-duration">42 s</td>' in rows[done.pk]
    assert '<td class="field-duration">2 h 5 min</td>' in rows[aborted.pk]
    assert re.search(r'<td class="field-duration">3 min 3\d s<div class="process-so-far">so far</div></td>',
                     rows[failed.pk])
    # The reason goes on after its step's name, cut to about 80 characters in all; all of it on hover.
    shown = re.search(r'<span class="process-step" title="Deploy config">Deploy config</span>'
                      r'<span class="failed-reason" title="([^"]*)">: ([^<]*)</span>', rows[failed.pk])
    assert shown.group(1) == reason
    assert shown.group(2).startswith("the provisioning system answered 500: stack frame,")
    assert len("Deploy config: " + shown.group(2)) <= 82 and shown.group(2).endswith("…")
    assert '<div class="failed-reason" title="aborted by bob: wrong node">aborted by bob: wrong node</div>' in \
        rows[aborted.pk]
    for column in ("process_and_status", "workflow_name", "subscription_links", "last_step_and_reason", "started",
                   "duration"):
        assert re.search(rf'<th scope="col" class="[^"]*\bcolumn-{column}\b', html), column


@runs
def test_the_step_log_and_inputs_lists_say_when_relative_with_the_exact_time_on_hover_and_how_long(staff_client):
    process = start_process("t_writes", by="alice")
    step = ProcessStep.objects.filter(process=process, name="Write A").get()
    ProcessStep.objects.filter(pk=step.pk).update(started_at=step.completed_at - timedelta(seconds=4.25),
                                                  completed_at=step.completed_at)
    step.refresh_from_db()

    steps = staff_client.get(reverse("admin:processes_processstep_changelist")).content.decode()
    inputs = staff_client.get(reverse("admin:processes_inputstate_changelist")).content.decode()

    row = re.search(r"<tr>.*?>Write A<.*?</tr>", steps, re.S).group(0)
    exact = humanize.exact_time(step.started_at)
    assert re.search(rf'<td class="field-started"><time datetime="[^"]+" title="{exact}">(just now|\d+ s ago)</time>',
                     row)
    assert '<td class="field-duration">4.2 s</td>' in row
    received = InputState.objects.get(process=process).input_time
    assert re.search(rf'<td class="field-received"><time datetime="[^"]+" title="{humanize.exact_time(received)}">',
                     inputs)


# --- colours -----------------------------------------------------------------------------------------------
def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours."""
    def luminance(colour: str) -> float:
        colour = colour.lstrip("#")
        if len(colour) == 3:
            colour = "".join(c * 2 for c in colour)
        channels = [int(colour[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_project_templates_take_every_colour_from_the_admins_theme_variables_except_the_badges():
    offending = []
    for path in TEMPLATES.rglob("*.html"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if (HEX.search(line) or "rgb(" in line) and ".status-" not in line and "status-badge" not in line:
                offending.append(f"{path.relative_to(TEMPLATES)}:{number}: {line.strip()}")
    assert offending == []
    styles = STYLES.read_text()
    for selector in ("tr.step-failed > td", "tr.diff-added td", "tr.diff-changed td", "tr.diff-removed td",
                     ".status-counts a.attention", ".step-error"):
        rule = re.search(rf"{re.escape(selector)}\s*\{{([^}}]*)\}}", styles).group(1)
        assert "var(--" in rule and not HEX.search(rule), (selector, rule)


def test_badges_keep_white_text_readable_on_their_colour_and_the_css_uses_the_same_colours():
    assert BADGE_TEXT == "#fff"
    for status, colour in {**BADGE_COLOURS, "default": BADGE_DEFAULT}.items():
        assert contrast(colour, BADGE_TEXT) >= 4.5, (status, colour)
        assert f"background:{colour};color:#fff" in badge(status)
    rules = re.findall(r"((?:\.status-[a-z_]+,?\s*)+)\{\s*background:\s*(#[0-9a-f]{6})", STYLES.read_text())
    in_css = {name: colour for names, colour in rules for name in re.findall(r"\.status-([a-z_]+)", names)}
    assert in_css
    for status, colour in BADGE_COLOURS.items():
        assert in_css.get(status) == colour, status
