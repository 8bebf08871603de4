"""The dashboard chart's geometry: bars, axes, labels and hover titles for an inline SVG, drawn without any JS."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.utils import dateformat

from processes.dashboard import SERIES, Bucket, Period

# The drawing's own coordinates: about its size in the admin index's 600px column, where its text is
# then as large as the page's; the SVG scales to its box through its viewBox.
WIDTH, HEIGHT = 580, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 36, 40
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Of each bucket's width, this much holds its bars, side by side; the rest separates buckets.
BAR_SHARE = 0.8
MIN_BAR_HEIGHT = 1.0  # a count of 1 next to one of 10 000 still shows
EN_DASH = "\u2013"


@dataclass(frozen=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    count: int
    title: str


@dataclass(frozen=True)
class Column:
    """A bucket's whole height, transparent: hovering anywhere over it shows both counts."""

    x: float
    width: float
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    second_line: str = ""


@dataclass(frozen=True)
class LegendItem:
    series: str
    label: str
    total: int
    x: float

    @property
    def text_x(self) -> float:
        return self.x + 20

    @property
    def text(self) -> str:
        return f"{self.label}: {self.total:,}"


@dataclass(frozen=True)
class Chart:
    title: str
    period: Period
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    columns: list[Column]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[LegendItem]
    totals: dict[str, int]
    empty: bool
    description: str

    @property
    def plot_height(self) -> int:
        return self.plot_bottom - self.plot_top

    @property
    def y_label_x(self) -> int:
        return self.plot_left - 6

    @property
    def x_label_y(self) -> tuple[int, int]:
        return self.plot_bottom + 16, self.plot_bottom + 30

    @property
    def middle(self) -> tuple[float, float]:
        return (self.plot_left + self.plot_right) / 2, (self.plot_top + self.plot_bottom) / 2


def nice_scale(largest: int, *, steps: int = 4) -> tuple[int, int]:
    """The top of the y axis and its step: whole numbers of 1, 2 or 5 times a power of ten, top >= largest."""
    raw = max(largest, 1) / steps
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step * math.ceil(max(largest, 1) / step), step


def bucket_name(bucket: Bucket, period: Period) -> str:
    """A bucket's name in hover titles: "Tue 3 Mar 14:00-15:00" or "Tue 3 Mar"; the current one "so far"."""
    day = dateformat.format(bucket.start, "D j M")
    if period.key == "hour":
        end = "now, so far" if bucket.current else dateformat.format(bucket.end, "H:i")
        return f"{day} {dateformat.format(bucket.start, 'H:i')}{EN_DASH}{end}"
    return f"{day} (today, so far)" if bucket.current else day


def x_ticks(buckets: list[Bucket], period: Period, slot: float) -> list[Tick]:
    """Hours: every sixth local hour, with the date under midnight; days: every day."""
    ticks = []
    for i, bucket in enumerate(buckets):
        middle = LEFT + slot * (i + 0.5)
        if period.key == "day":
            ticks.append(Tick(middle, dateformat.format(bucket.start, "D j M")))
        elif bucket.start.hour % 6 == 0:  # at the hour's start, on the boundary between two buckets
            second = dateformat.format(bucket.start, "D j M") if bucket.start.hour == 0 else ""
            ticks.append(Tick(LEFT + slot * i, dateformat.format(bucket.start, "H:i"), second))
    return ticks


def layout(buckets: list[Bucket], period: Period) -> Chart:
    """The chart of `buckets`: a pair of bars per bucket (completed, failed), a bar only for a count above 0."""
    totals = {s: sum(b.counts.get(s, 0) for b in buckets) for s in SERIES}
    largest = max((b.counts.get(s, 0) for b in buckets for s in SERIES), default=0)
    top, step = nice_scale(largest)
    slot = PLOT_WIDTH / max(len(buckets), 1)
    bar_width = slot * BAR_SHARE / len(SERIES)
    bottom = TOP + PLOT_HEIGHT
    bars, columns = [], []
    for i, bucket in enumerate(buckets):
        x0 = LEFT + slot * i
        name = bucket_name(bucket, period)
        columns.append(Column(
            round(x0, 2), round(slot, 2),
            f"{name}: " + ", ".join(f"{bucket.counts.get(s, 0):,} {s}" for s in SERIES),
        ))
        for j, series in enumerate(SERIES):
            count = bucket.counts.get(series, 0)
            if not count:
                continue
            height = max(PLOT_HEIGHT * count / top, MIN_BAR_HEIGHT)
            x = x0 + slot * (1 - BAR_SHARE) / 2 + bar_width * j
            bars.append(Bar(series, round(x, 2), round(bottom - height, 2), round(bar_width, 2), round(height, 2),
                            count, f"{name}: {count:,} {series}"))
    y_ticks = [Tick(round(bottom - PLOT_HEIGHT * value / top, 2), f"{value:,}") for value in range(0, top + 1, step)]
    legend = [LegendItem(s, s, totals[s], LEFT + 4 + 170 * k) for k, s in enumerate(SERIES)]
    return Chart(
        title=f"Processes completed and failed, {period.label}",
        period=period, width=WIDTH, height=HEIGHT, plot_left=LEFT, plot_right=WIDTH - RIGHT,
        plot_top=TOP, plot_bottom=bottom, bars=bars, columns=columns, y_ticks=y_ticks,
        x_ticks=x_ticks(buckets, period, slot), legend=legend, totals=totals, empty=largest == 0,
        description=", ".join(f"{totals[s]:,} {s}" for s in SERIES) + f" in the {period.window}",
    )
