"""The live feed's cursor: it passes over ids not yet committed and asks for them again."""

from __future__ import annotations

from payments.console.feed import (
    BACKLOG_IDS,
    CATCH_UP_IDS,
    GAP_PATIENCE_SECONDS,
    MAX_GAPS,
    FeedCursor,
    resume_point,
)


def started(after: int) -> FeedCursor:
    cursor = FeedCursor(after)
    cursor.start(after)
    return cursor


def test_a_new_feed_starts_a_backlog_before_the_newest_entry() -> None:
    cursor = FeedCursor()

    cursor.start(1000)

    assert cursor.after == 1000 - BACKLOG_IDS


def test_a_feed_of_an_empty_ledger_starts_at_zero() -> None:
    cursor = FeedCursor()

    cursor.start(3)

    assert cursor.after == 0


def test_a_feed_resumes_where_it_was_when_that_is_close_behind() -> None:
    cursor = FeedCursor(900)

    cursor.start(1000)

    assert cursor.after == 900


def test_a_feed_that_would_replay_the_ledger_starts_afresh_instead() -> None:
    far_behind = FeedCursor(0)
    ahead = FeedCursor(5000)

    far_behind.start(1000 + CATCH_UP_IDS)
    ahead.start(1000)

    assert (far_behind.after, ahead.after) == (1000 + CATCH_UP_IDS - BACKLOG_IDS, 1000 - BACKLOG_IDS)


def test_ids_passed_without_being_seen_are_asked_for_again_until_they_show() -> None:
    cursor = started(10)

    cursor.saw([11, 14, 15], now=0.0)

    assert (cursor.after, cursor.waiting_for) == (15, [12, 13])

    cursor.saw([13, 16], now=1.0)

    assert (cursor.after, cursor.waiting_for) == (16, [12])


def test_a_read_with_nothing_new_changes_nothing() -> None:
    cursor = started(10)
    cursor.saw([12], now=0.0)

    cursor.saw([], now=1.0)

    assert (cursor.after, cursor.waiting_for) == (12, [11])


def test_a_gap_is_given_up_after_the_patience() -> None:
    cursor = started(10)
    cursor.saw([12], now=0.0)

    cursor.saw([], now=GAP_PATIENCE_SECONDS / 2)
    kept = cursor.waiting_for
    cursor.saw([], now=GAP_PATIENCE_SECONDS + 1)

    assert (kept, cursor.waiting_for) == ([11], [])


def test_the_oldest_gaps_go_first_beyond_the_most_kept() -> None:
    cursor = started(0)

    cursor.saw([MAX_GAPS + 10], now=0.0)

    assert len(cursor.waiting_for) == MAX_GAPS
    assert cursor.waiting_for[0] == 10


def test_a_resume_point_is_a_plain_entry_id() -> None:
    assert [resume_point(raw) for raw in ("42", None, "", "-1", "4x", "١٢", "9" * 19)] == [
        42,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_the_watermark_stays_below_the_oldest_gap_until_it_shows() -> None:
    cursor = started(10)

    cursor.saw([11, 13, 14], now=0.0)
    below_the_gap = cursor.watermark
    cursor.saw([12], now=1.0)

    assert (below_the_gap, cursor.watermark) == (11, 14)


def test_a_feed_resumed_at_the_watermark_asks_again_for_what_it_had_not_seen() -> None:
    first = started(10)
    first.saw([11, 13], now=0.0)

    resumed = FeedCursor(first.watermark)
    resumed.start(13)

    assert resumed.after == 11
