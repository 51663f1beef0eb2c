"""What the console reads from the ledger, beside the :class:`Ledger`'s own reads.

Every query is read-only and takes its arguments as bound parameters. The chart's activity reads
only the last minutes of transfers, through the index on their creation time; the totals read every
account's row (not every transfer), which is what an overview of balances costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Self

import asyncpg

from payments.service.ledger import Entry, Ledger
from payments.service.ledger.ledger import ENTRY_COLUMNS, entry_from_row

POOL_SIZE: Final = 4
"""Connections of the console's pool: its pages run a few short queries each."""


@dataclass(frozen=True, slots=True)
class Totals:
    """The ledger at a glance."""

    customers: int
    customer_balance: int
    """Cents held by all customer accounts together."""
    system_balances: dict[str, int]
    """The system accounts' balances, by id (``@openings``, ``@deposits``, ``@payments:N``)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """What happened in one slice of time: transfers by what they were."""

    start: datetime
    payments: int
    declined: int
    refunds: int
    deposits: int


@dataclass(frozen=True, slots=True)
class PaymentTransfer:
    """A transfer of a payment id: its debit (posted or declined) or the refund of a debit."""

    transfer_id: str
    kind: str
    account_id: str
    amount: int
    status: str
    refund_of: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    """A customer account's row."""

    account_id: str
    balance: int
    refundable: int
    opened_at: datetime


class Books:
    """The ledger as the console sees it, on a small pool of read-only connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.ledger = Ledger(pool)
        """The ledger's own reads: balances, statements, a payment id's history."""

    @classmethod
    async def connect(cls, url: str) -> Self:
        """Books on a pool of up to :data:`POOL_SIZE` connections to ``url``, bound to the running loop.

        It connects on first use: a ledger that cannot be reached yet (or refuses the console's
        role) makes the pages say so, instead of keeping the console from starting.
        """
        return cls(await asyncpg.create_pool(url, min_size=0, max_size=POOL_SIZE))

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def totals(self) -> Totals:
        """Counts and balances over all accounts."""
        # One pass over the accounts. sum() of bigints is a numeric: many large balances together can
        # pass a bigint.
        row = await self._pool.fetchrow(
            """
            SELECT count(*) FILTER (WHERE kind = 'customer') AS customers,
                   coalesce(sum(balance) FILTER (WHERE kind = 'customer'), 0) AS held,
                   coalesce(array_agg(id ORDER BY id) FILTER (WHERE kind = 'system'), '{}') AS ids,
                   coalesce(array_agg(balance ORDER BY id) FILTER (WHERE kind = 'system'), '{}') AS balances
            FROM ledger_accounts
            """
        )
        assert row is not None
        return Totals(
            customers=row["customers"],
            customer_balance=int(row["held"]),
            system_balances=dict(zip(row["ids"], row["balances"], strict=True)),
        )

    async def activity(self, *, buckets: int, seconds: int) -> list[Bucket]:
        """The last ``buckets`` slices of ``seconds`` each, oldest first, empty ones included."""
        rows = await self._pool.fetch(
            """
            WITH slice AS (SELECT make_interval(secs => $2) AS length),
            slices AS (
                SELECT generate_series(last - length * ($1 - 1), last, length) AS start
                FROM slice, LATERAL (SELECT date_bin(length, now(), 'epoch') AS last) newest
            )
            SELECT s.start,
                   count(*) FILTER (WHERE t.kind = 'payment' AND t.status = 'posted') AS payments,
                   count(*) FILTER (WHERE t.kind = 'payment' AND t.status = 'declined') AS declined,
                   count(*) FILTER (WHERE t.kind = 'refund') AS refunds,
                   count(*) FILTER (WHERE t.kind = 'deposit') AS deposits
            FROM slices s
            LEFT JOIN ledger_transfers t
              ON t.created_at >= s.start AND t.created_at < s.start + make_interval(secs => $2)
            GROUP BY s.start
            ORDER BY s.start
            """,
            buckets,
            seconds,
        )
        return [
            Bucket(row["start"], row["payments"], row["declined"], row["refunds"], row["deposits"])
            for row in rows
        ]

    async def transfers_of(self, payment_id: str) -> list[PaymentTransfer]:
        """Every transfer of ``payment_id`` (its debits, declined too, and their refunds), oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT id, kind, amount, status, refund_of, created_at,
                   CASE WHEN kind = 'payment' THEN debit_account ELSE credit_account END AS account
            FROM ledger_transfers
            WHERE payment_id = $1
            ORDER BY created_at, id
            """,
            payment_id,
        )
        return [
            PaymentTransfer(
                row["id"],
                row["kind"],
                row["account"],
                row["amount"],
                row["status"],
                row["refund_of"],
                row["created_at"],
            )
            for row in rows
        ]

    async def account(self, account_id: str) -> Account | None:
        """The customer account ``account_id``, or None when the ledger has none."""
        row = await self._pool.fetchrow(
            "SELECT id, balance, refundable, opened_at FROM ledger_accounts"
            " WHERE id = $1 AND kind = 'customer'",
            account_id,
        )
        return (
            None if row is None else Account(row["id"], row["balance"], row["refundable"], row["opened_at"])
        )

    async def newest_entry_id(self) -> int:
        """The highest entry id visible now; 0 for an empty ledger."""
        newest: int = await self._pool.fetchval("SELECT coalesce(max(id), 0) FROM ledger_entries")
        return newest

    async def entries_since(self, after: int, also: list[int], limit: int) -> list[Entry]:
        """Entries of every account above id ``after``, and those among the ids ``also``; by id."""
        rows = await self._pool.fetch(
            f"""
            SELECT {ENTRY_COLUMNS}
            FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
            WHERE e.id IN (
                -- Two index scans that each stop early: an OR of both conditions would read every
                -- entry above $1 before the limit, slower the further a feed is behind.
                (SELECT id FROM ledger_entries WHERE id > $1 ORDER BY id LIMIT $3)
                UNION ALL
                SELECT id FROM ledger_entries WHERE id = ANY($2::bigint[])
            )
            ORDER BY e.id LIMIT $3
            """,  # noqa: S608 - the only text pasted is the constant column list
            after,
            also,
            limit,
        )
        return [entry_from_row(row) for row in rows]
