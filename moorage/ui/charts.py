"""Chart geometry for server-rendered SVG (templates/_charts.html draws it).

Pure functions: numbers in, coordinates out. Colours come from CSS classes, so the strict CSP
(no inline styles) holds and the charts need no JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    text: str
    y: float
    width: float
    href: str | None = None


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_height: int


def bar_chart(
    items: Sequence[tuple[str, int, str | None]],
    fmt: Callable[[int], str],
    width: int = 560,
    label_width: int = 170,
    bar_height: int = 18,
    gap: int = 8,
) -> BarChart:
    """Horizontal bars, longest first as given: (label, value, link or None)."""
    top = max((v for _, v, _ in items), default=0) or 1
    room = width - label_width - 90  # space for the value text after each bar
    bars = [
        Bar(
            label if len(label) <= 26 else label[:25] + "…",
            value,
            fmt(value),
            i * (bar_height + gap) + 4,
            max(1.0, round(room * value / top, 1)) if value else 0.0,
            href,
        )
        for i, (label, value, href) in enumerate(items)
    ]
    height = max(1, len(bars)) * (bar_height + gap) + 4
    return BarChart(bars, width, height, label_width, bar_height)


@dataclass(frozen=True)
class Series:
    name: str
    points: str  # "x,y x,y ..." for <polyline points>
    dots: list[tuple[float, float, int, str]]  # x, y, value, day (for <title> tooltips)
    total: int


@dataclass(frozen=True)
class LineChart:
    series: list[Series]
    width: int
    height: int
    left: int
    bottom: int
    top_value: int
    y_ticks: list[tuple[float, int]]
    x_ticks: list[tuple[float, str]]


def line_chart(
    days: Sequence[date],
    series: Sequence[tuple[str, Sequence[int]]],
    width: int = 560,
    height: int = 200,
) -> LineChart:
    """One line per series over *days* (values aligned with *days*)."""
    left, right, top, bottom = 40, 10, 10, height - 24
    top_value = max((max(values, default=0) for _, values in series), default=0)
    top_value = _nice(top_value)
    span_x = (width - left - right) / max(1, len(days) - 1)

    def xy(i: int, v: int) -> tuple[float, float]:
        y = bottom - (bottom - top) * v / top_value
        return round(left + i * span_x, 1), round(y, 1)

    out = []
    for name, values in series:
        coords = [xy(i, v) for i, v in enumerate(values)]
        out.append(
            Series(
                name,
                " ".join(f"{x},{y}" for x, y in coords),
                [
                    (x, y, v, days[i].isoformat())
                    for i, ((x, y), v) in enumerate(zip(coords, values, strict=True))
                ],
                sum(values),
            )
        )
    y_ticks = [(xy(0, v)[1], v) for v in (0, top_value // 2, top_value)]
    step = max(1, len(days) // 5)
    x_ticks = [(xy(i, 0)[0], d.strftime("%b %d")) for i, d in enumerate(days) if i % step == 0]
    return LineChart(out, width, height, left, bottom, top_value, y_ticks, x_ticks)


def _nice(value: int) -> int:
    """A round axis maximum at or above *value* (at least 2, so a half tick is whole)."""
    if value <= 2:
        return 2
    magnitude = int(10 ** (len(str(value)) - 1))
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return factor * magnitude
    return value
