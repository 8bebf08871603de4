"""Times and durations read the same everywhere: exact with the zone, relative, and human durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.utils import formats, timezone

from orchestrator_site import humanize
from workflows.dsl import human_duration, sleep

MOMENT = datetime(2026, 11, 30, 6, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize(("value", "shown"), [
    (0.00004, "< 1 ms"),
    (0.0123, "12 ms"),
    (0.48, "480 ms"),
    (0.9996, "1 s"),
    (4.25, "4.2 s"),  # to a tenth under ten seconds (rounded half to even)
    (4.0, "4 s"),
    (42, "42 s"),
    (59.6, "1 min"),
    (125, "2 min 5 s"),
    (3600, "1 h"),
    (7500, "2 h 5 min"),
    (3605, "1 h 5 s"),
    (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    (timedelta(minutes=42), "42 min"),
    (0, "0 s"),
    (-5, "0 s"),  # a clock that went back is no negative duration
    (None, "—"),
])
def test_durations_read_in_the_unit_that_fits(value, shown):
    assert humanize.duration(value) == shown


def test_human_duration_is_the_same_format_in_whole_seconds_so_timer_names_stay_the_same():
    for seconds in (0, 1, 9, 45, 60, 61, 600, 3605, 7500, 90000, 266400):
        assert human_duration(timedelta(seconds=seconds + 0.7)) == humanize.duration(seconds)
    # The names timers have always had: a step's name must not change under a running process.
    assert human_duration(timedelta(seconds=45)) == "45 s"
    assert human_duration(timedelta(minutes=10)) == "10 min"
    assert human_duration(timedelta(hours=2, minutes=5)) == "2 h 5 min"
    assert human_duration(timedelta(days=3, hours=4)) == "3 d 4 h"
    assert sleep(timedelta(minutes=10)).name == "Wait 10 min"


def test_relative_times_say_ago_for_the_past_and_in_for_the_future():
    now = MOMENT
    assert humanize.relative_time(now - timedelta(minutes=3), now) == "3 min ago"
    assert humanize.relative_time(now - timedelta(minutes=3, seconds=12), now) == "3 min 12 s ago"
    assert humanize.relative_time(now + timedelta(hours=2), now) == "in 2 h"
    assert humanize.relative_time(now + timedelta(days=1, hours=2, minutes=3), now) == "in 1 d 2 h"
    assert humanize.relative_time(now - timedelta(milliseconds=400), now) == "just now"
    # Whole seconds: a page rendered once does not keep tenths of a second true.
    assert humanize.relative_time(now - timedelta(seconds=4.6), now) == "4 s ago"
    assert humanize.relative_time(None, now) == "—"


def test_an_exact_time_names_its_zone_and_is_in_the_time_zone_setting(settings):
    assert humanize.exact_time(MOMENT) == "2026-11-30 06:18:30 UTC"

    settings.TIME_ZONE = "Europe/Amsterdam"
    assert humanize.exact_time(MOMENT) == "2026-11-30 07:18:30 CET"
    assert humanize.exact_time(MOMENT.replace(month=7)) == "2026-07-30 08:18:30 CEST"
    # A naive moment is taken as being in that zone.
    assert humanize.exact_time(datetime(2026, 11, 30, 7, 18, 30)) == "2026-11-30 07:18:30 CET"
    assert humanize.exact_time(None) == "—"


def test_django_shows_a_moment_the_same_way_wherever_the_project_does_not_format_it():
    # Admin columns and read-only fields of a date and time go through localize().
    assert formats.localize(timezone.template_localtime(MOMENT)) == "2026-11-30 06:18:30 UTC"
    assert Template("{{ moment }}").render(Context({"moment": MOMENT})) == "2026-11-30 06:18:30 UTC"
    assert formats.localize(MOMENT.date()) == "2026-11-30"


def test_the_template_filters_give_the_relative_time_with_the_exact_one_on_hover():
    moment = timezone.now() - timedelta(minutes=5)
    exact = humanize.exact_time(moment)
    html = Template(
        "{% load orchestrator_times %}{{ m|relative_time_html }}|{{ m|exact_time_html }}|{{ m|exact_time }}|"
        "{{ m|relative_time }}|{{ d|duration }}|{{ s|duration }}|{{ missing|exact_time }}"
    ).render(Context({"m": moment, "d": timedelta(seconds=42), "s": 0.48}))

    relative, exact_tag, plain_exact, plain_relative, *rest = html.split("|")
    assert relative == f'<time datetime="{timezone.localtime(moment).isoformat()}" title="{exact}">5 min ago</time>'
    assert exact_tag.endswith(f'title="5 min ago">{exact}</time>')
    assert (plain_exact, plain_relative) == (exact, "5 min ago")
    assert rest == ["42 s", "480 ms", "—"]
