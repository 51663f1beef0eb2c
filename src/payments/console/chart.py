"""The overview's chart of recent transfers: stacked bars, laid out here and drawn as SVG by the page.

Pure geometry, so the page needs no chart library and no script to show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from payments.console.books import Bucket

SERIES: Final = (
    ("payments", "Payments"),
    ("declined", "Declined"),
    ("refunds", "Refunds"),
    ("deposits", "Deposits"),
)
"""Each bar's parts, bottom to top: a :class:`Bucket` field and its label."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One part of one bar, in the chart's coordinates (y grows downwards)."""

    series: str
    x: float
    y: float
    width: float
    height: float
    count: int
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template draws: bars, the scale's top value and the axis labels."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    top: int
    """The count the chart's full height stands for."""
    labels: tuple[tuple[float, str], ...]
    """Times under the x axis, by their x."""


def nice_top(peak: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least ``peak`` (at least 5)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= max(peak, 5):
                return step * top
        top *= 10


def layout(
    buckets: Sequence[Bucket], *, width: int = 720, height: int = 180, seconds: int, label_minutes: int = 2
) -> Chart:
    """Stacked bars for ``buckets`` (oldest first), each ``seconds`` long, filling ``width`` x ``height``.

    The x axis is labelled at every ``label_minutes``-th whole minute.
    """
    slot = width / max(len(buckets), 1)
    gap = min(2.0, slot / 4)
    top = nice_top(max((sum(getattr(b, name) for name, _ in SERIES) for b in buckets), default=0))
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for index, bucket in enumerate(buckets):
        x = index * slot + gap / 2
        base = float(height)
        stamp = bucket.start.strftime("%H:%M:%S")
        for name, label in SERIES:
            count = getattr(bucket, name)
            if count:
                tall = height * count / top
                base -= tall
                bars.append(
                    Bar(
                        name,
                        x,
                        base,
                        slot - gap,
                        tall,
                        count,
                        f"{stamp} +{seconds} s: {count} {label.lower()}",
                    )
                )
        if bucket.start.second == 0 and bucket.start.minute % label_minutes == 0:
            labels.append((x, bucket.start.strftime("%H:%M")))
    return Chart(width, height, tuple(bars), top, tuple(labels))
