"""The overview chart's geometry: a scale with a round top, stacked bars and time labels."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from payments.console.books import Bucket
from payments.console.chart import SERIES, layout, nice_top

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def bucket(index: int, payments: int = 0, declined: int = 0, refunds: int = 0, deposits: int = 0) -> Bucket:
    return Bucket(START + timedelta(seconds=10 * index), payments, declined, refunds, deposits)


@pytest.mark.parametrize(
    ("peak", "top"),
    [
        (0, 5),
        (1, 5),
        (5, 5),
        (6, 10),
        (10, 10),
        (11, 20),
        (20, 20),
        (21, 50),
        (51, 100),
        (101, 200),
        (4999, 5000),
    ],
)
def test_the_scale_tops_at_the_next_round_number_and_at_least_five(peak: int, top: int) -> None:
    assert nice_top(peak) == top


def test_a_bar_stacks_its_series_bottom_to_top_with_heights_proportional_to_counts() -> None:
    chart = layout(
        [bucket(0, payments=4, declined=1, refunds=0, deposits=5)], width=100, height=200, seconds=10
    )

    assert chart.top == 10
    assert [(bar.series, bar.count) for bar in chart.bars] == [
        ("payments", 4),
        ("declined", 1),
        ("deposits", 5),
    ]
    assert [bar.height for bar in chart.bars] == [80.0, 20.0, 100.0]
    # Each part sits on the one below it; the first on the axis, the last reaching the top.
    assert chart.bars[0].y + chart.bars[0].height == 200
    for lower, upper in zip(chart.bars, chart.bars[1:], strict=False):
        assert upper.y + upper.height == pytest.approx(lower.y)
    assert chart.bars[-1].y == pytest.approx(0)
    assert {bar.x for bar in chart.bars} == {1.0}
    assert {bar.width for bar in chart.bars} == {98.0}


def test_bars_share_one_scale_so_the_highest_bucket_sets_it() -> None:
    chart = layout([bucket(0, payments=3), bucket(1, payments=15)], width=200, height=100, seconds=10)

    assert chart.top == 20
    low, high = chart.bars
    assert (low.height, high.height) == (15.0, 75.0)
    assert high.height / low.height == pytest.approx(15 / 3)
    assert (low.x, high.x) == (1.0, 101.0)


def test_empty_buckets_draw_nothing_but_keep_their_slot() -> None:
    chart = layout([bucket(0), bucket(1, refunds=2), bucket(2)], width=300, height=100, seconds=10)

    (bar,) = chart.bars
    assert (bar.series, bar.x, bar.height) == ("refunds", 101.0, 40.0)


def test_no_transfers_at_all_is_an_empty_chart_on_the_smallest_scale() -> None:
    chart = layout([bucket(index) for index in range(60)], seconds=10)

    assert (chart.bars, chart.top) == ((), 5)
    assert len(chart.labels) == 5


def test_no_buckets_at_all_is_an_empty_chart() -> None:
    chart = layout([], seconds=10)

    assert (chart.bars, chart.labels, chart.top) == ((), (), 5)


def test_labels_at_every_second_whole_minute_at_the_start_of_their_buckets() -> None:
    buckets = [bucket(index, payments=1) for index in range(60)]

    chart = layout(buckets, width=600, height=100, seconds=10)

    assert [label for _, label in chart.labels] == ["12:00", "12:02", "12:04", "12:06", "12:08"]
    assert [x for x, _ in chart.labels] == [bar.x for bar in chart.bars[::12]]


def test_each_part_says_when_and_what_it_counts() -> None:
    chart = layout([bucket(3, declined=2)], seconds=10)

    assert chart.bars[0].title == "12:00:30 +10 s: 2 declined"


def test_every_series_is_a_field_of_a_bucket() -> None:
    assert {name for name, _ in SERIES} == {field.name for field in dataclasses.fields(Bucket)} - {"start"}
