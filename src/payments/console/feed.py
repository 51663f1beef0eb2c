"""The live feed: customer ledger entries as server-sent events, none skipped.

An entry's id is drawn when its row is inserted, not when its transaction commits, so an entry can
become visible after one with a higher id (a transfer waiting for a lock between its insert and
its commit). A feed that only asked for ids above the last one it saw would skip it. The
:class:`FeedCursor` remembers every id it has passed without seeing (a gap) and asks for those
again until they show up or, rolled back or never customer entries at all, it gives up on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from payments.console.books import Books
from payments.console.formats import moment, money
from payments.runtime.reconcile import READ_FAILURES
from payments.service.ledger import Entry

LOG = logging.getLogger("payments.console")
BACKLOG_IDS: Final = 30
"""A new feed starts this many entry ids back (both sides of each transfer: about 15 customer ones)."""
CATCH_UP_IDS: Final = 500
"""A feed that resumes further back than this starts afresh instead of replaying the ledger."""
GAP_PATIENCE_SECONDS: Final = 60.0
"""How long a gap is asked for again. A ledger write is one statement of milliseconds; one that
commits later than this (a server frozen for a minute) is missed by the feeds open meanwhile, not
by the pages, which read the ledger itself."""
MAX_GAPS: Final = 2000
READ_LIMIT: Final = 200
POLL_SECONDS: Final = 0.25
KEEPALIVE_SECONDS: Final = 15.0


@dataclass
class FeedCursor:
    """How far a feed has read the ledger's entries, and which ids below that it has not seen yet."""

    after: int | None = None
    """Every entry id up to this one was seen or is in :attr:`gaps`; None until the feed starts."""
    gaps: dict[int, float] = field(default_factory=dict)
    """Ids passed without being seen, and when they were first missed."""

    def start(self, newest: int) -> None:
        """Begin just before ``newest``, unless resuming close enough behind it."""
        if self.after is None or not newest - CATCH_UP_IDS <= self.after <= newest:
            self.after = max(newest - BACKLOG_IDS, 0)

    @property
    def waiting_for(self) -> list[int]:
        """The gaps to ask for again."""
        return sorted(self.gaps)

    @property
    def watermark(self) -> int:
        """The id up to which every entry was seen: where a feed that reconnects resumes."""
        assert self.after is not None, "start the cursor first"
        return min(self.gaps, default=self.after + 1) - 1

    def saw(self, ids: Iterable[int], now: float) -> None:
        """Take in the ids one read returned (above :attr:`after`, or gaps), at time ``now``."""
        assert self.after is not None, "start the cursor first"
        seen = set(ids)
        for entry_id in seen:
            self.gaps.pop(entry_id, None)
        newest = max(seen, default=self.after)
        if newest > self.after:
            # Only the newest MAX_GAPS are kept anyway: a jump of the ids (a restore) costs no more.
            passed = range(max(self.after + 1, newest - MAX_GAPS), newest)
            self.gaps.update(dict.fromkeys(set(passed) - seen, now))
            self.after = newest
        expired = [entry_id for entry_id, since in self.gaps.items() if now - since > GAP_PATIENCE_SECONDS]
        for entry_id in expired:
            del self.gaps[entry_id]
        for entry_id in sorted(self.gaps)[: max(len(self.gaps) - MAX_GAPS, 0)]:
            del self.gaps[entry_id]


def resume_point(raw: str | None) -> int | None:
    """The entry id a feed resumes after (``Last-Event-ID``, or ``?after=``); None: start afresh."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


async def entry_events(
    books: Books,
    after: int | None,
    stopping: asyncio.Event,
) -> AsyncIterator[str]:
    """Server-sent events of customer entries, as JSON, until ``stopping`` is set.

    A read that fails is logged and tried again at the next poll.
    """
    cursor = FeedCursor(after)
    started = False
    quiet_since = time.monotonic()
    yield "retry: 1000\n\n"
    while not stopping.is_set():
        entries: list[Entry] = []
        try:
            if not started:
                cursor.start(await books.newest_entry_id())
                started = True
            assert cursor.after is not None
            entries = await books.entries_since(cursor.after, cursor.waiting_for, READ_LIMIT)
            cursor.saw((entry.entry_id for entry in entries), time.monotonic())
        except READ_FAILURES as error:
            LOG.warning("live feed: the ledger cannot be read: %s", error)
        customers = [entry for entry in entries if not entry.account_id.startswith("@")]
        for entry in customers:
            # The event's id is where a reconnection resumes: below every gap, so none is lost.
            yield f"id: {cursor.watermark}\nevent: entry\ndata: {json.dumps(_shown(entry))}\n\n"
        if customers:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": still here\n\n"
        if len(entries) < READ_LIMIT:  # a full read means more are waiting: read on at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL_SECONDS)


def _shown(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.entry_id,
        "time": moment(entry.created_at),
        "kind": entry.kind,
        "account": entry.account_id,
        "payment": entry.payment_id,
        "amount": money(entry.amount),
        "negative": entry.amount < 0,
        "balance": money(entry.balance_after),
    }
