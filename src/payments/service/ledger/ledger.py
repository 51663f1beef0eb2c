"""The ledger's Python face: one asyncpg pool, one SQL function call per write.

Every argument reaches SQL as a bound parameter; the SQL text is constant. Arguments are checked
here first, so that a bad one raises ``LedgerArgumentError`` (a ``ValueError``) naming it, before
any round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final, Self

import asyncpg

from payments.domain.balances import MAX_BALANCE, DepositRefusedError
from payments.service.ledger.errors import (
    AccountNotFoundError,
    DebitNotFoundError,
    LedgerArgumentError,
    LedgerError,
    LedgerFaultError,
    TransferConflictError,
)
from payments.service.ledger.migrate import APPLIED, migrate, migrations
from payments.service.ledger.records import (
    Balance,
    Debit,
    Deposit,
    Entry,
    Refund,
    Statement,
    Withdrawal,
    iso_utc,
)
from payments.service.validation import MAX_ENTRY_ID, MAX_PAGE

_ERRORS: Final[Mapping[str, type[Exception]]] = {
    "LG404": AccountNotFoundError,
    "LG409": TransferConflictError,
    "LG410": DebitNotFoundError,
    "LG422": DepositRefusedError,
}
"""The SQLSTATEs the ledger's functions raise, and what each means here."""

PASSING: Final = ("08", "40", "53", "57", "58", "55P03", "25006")
"""SQLSTATEs (classes, or one code) of a failure that a later try may not meet: the connection failed,
a deadlock or serialization failure rolled the transaction back, the server is short of resources,
shutting down, starting, or cancelled the statement, an I/O error, a lock not granted in time, a
server that is read-only for now (a standby not yet promoted after a failover). Every
other refusal is raised as :class:`LedgerFaultError`: trying again would fail again, for ever."""


@contextmanager
def _refusals_translated() -> Iterator[None]:
    """Raise PostgreSQL's refusals as the ledger's own errors, and passing failures unchanged."""
    try:
        yield
    except asyncpg.PostgresError as error:
        state = error.sqlstate or ""
        refusal = _ERRORS.get(state)
        if refusal is not None:
            raise refusal(error.args[0]) from None
        if state.startswith(PASSING):
            raise
        raise LedgerFaultError(f"{type(error).__name__} (SQLSTATE {state}): {error}") from error


ENTRY_COLUMNS: Final = """
    e.id, e.transfer_id, e.account_id, t.kind, e.amount, t.payment_id, e.created_at, e.balance_after
"""
"""What :func:`entry_from_row` reads, from ``ledger_entries e`` joined to ``ledger_transfers t``."""


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise LedgerArgumentError(f"{name}: must be a non-empty string")
    if "\x00" in value or not value.isprintable():
        raise LedgerArgumentError(f"{name}: may not contain control or unprintable characters")
    return value


def _cents(value: object, name: str, *, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= MAX_BALANCE:
        raise LedgerArgumentError(f"{name}: must be an integer from {least} to {MAX_BALANCE}")
    return value


def _opening(value: int | None) -> int | None:
    return None if value is None else _cents(value, "opening", least=0)


def entry_from_row(row: asyncpg.Record) -> Entry:
    """The entry in a row of :data:`ENTRY_COLUMNS`."""
    return Entry(
        entry_id=row["id"],
        transfer_id=row["transfer_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        amount=row["amount"],
        payment_id=row["payment_id"],
        created_at=iso_utc(row["created_at"]),
        balance_after=row["balance_after"],
    )


class Ledger:
    """The double-entry ledger in PostgreSQL (see ``migrations/0001_ledger.sql`` for the rules).

    Every write is idempotent by its transfer id: a repeated call records nothing and answers the
    first call's result; the same id with other parameters raises :class:`TransferConflictError`.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, max_size: int = 10) -> Self:
        """A ledger on a pool of at most ``max_size`` connections, bound to the running event loop."""
        return cls(await asyncpg.create_pool(url, min_size=1, max_size=max_size))

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    async def migrate(self) -> list[str]:
        """Bring the schema up to date; the names of the migrations applied now (an administrator's)."""
        async with self._pool.acquire() as connection:
            return await migrate(connection)

    async def missing_migrations(self) -> list[str]:
        """The names of the shipped migrations that the database has not applied."""
        try:
            applied = {row["version"] for row in await self._pool.fetch(APPLIED)}
        except asyncpg.UndefinedTableError:  # never migrated
            applied = set()
        return [name for version, name, _ in migrations() if version not in applied]

    async def _call(self, query: str, *args: object) -> asyncpg.Record:
        row = await self._fetchrow(query, *args)
        assert row is not None, "a ledger function answers one row"
        return row

    async def _fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        with _refusals_translated():
            return await self._pool.fetchrow(query, *args)

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        with _refusals_translated():
            return await self._pool.fetch(query, *args)

    async def open_account(self, account_id: str, opening: int) -> Balance:
        """Open an account with ``opening`` cents (transfer ``open:<account_id>`` from ``@openings``).

        Opening an open account answers the balance right after its opening; with another
        opening balance, :class:`TransferConflictError`.
        """
        _text(account_id, "account_id")
        row = await self._call(
            "SELECT balance FROM ledger_open($1, $2)", account_id, _cents(opening, "opening", least=0)
        )
        return Balance(account_id, row["balance"])

    async def withdraw(
        self, transfer_id: str, account_id: str, amount: int, payment_id: str, *, opening: int | None
    ) -> Withdrawal:
        """A payment's debit: posted, or declined (recorded) when the balance is short.

        An unknown account is opened with ``opening`` cents first, in the same transaction, or
        raises :class:`AccountNotFoundError` when ``opening`` is None.
        """
        row = await self._call(
            "SELECT status, balance FROM ledger_withdraw($1, $2, $3, $4, $5)",
            _text(transfer_id, "transfer_id"),
            _text(account_id, "account_id"),
            _cents(amount, "amount"),
            _text(payment_id, "payment_id"),
            _opening(opening),
        )
        return Withdrawal(transfer_id, row["status"], row["balance"])

    async def refund(self, transfer_id: str, debit_id: str) -> Refund:
        """Give a posted debit's amount back to its account, once per debit.

        A debit already refunded, under any transfer id, answers that first refund and moves
        nothing; a debit that is not a posted payment raises :class:`DebitNotFoundError`.
        """
        row = await self._call(
            "SELECT transfer_id, customer, amount, balance FROM ledger_refund($1, $2)",
            _text(transfer_id, "transfer_id"),
            _text(debit_id, "debit_id"),
        )
        return Refund(row["transfer_id"], debit_id, row["customer"], row["amount"], row["balance"])

    async def last_unrefunded_debit(self, payment_id: str) -> Debit | None:
        """The newest posted debit of ``payment_id`` that has no refund, if any."""
        _text(payment_id, "payment_id")
        row = await self._fetchrow(
            """
            SELECT t.id, t.debit_account, t.amount, t.payment_id, t.created_at
            FROM ledger_transfers t
            WHERE t.payment_id = $1 AND t.kind = 'payment' AND t.status = 'posted'
              AND NOT EXISTS (SELECT FROM ledger_transfers r WHERE r.refund_of = t.id)
            ORDER BY t.created_at DESC, t.id DESC
            LIMIT 1
            """,
            payment_id,
        )
        if row is None:
            return None
        return Debit(
            row["id"], row["debit_account"], row["amount"], row["payment_id"], iso_utc(row["created_at"])
        )

    async def deposit(
        self, transfer_id: str, account_id: str, amount: int, *, opening: int | None
    ) -> Deposit:
        """Add ``amount`` cents from ``@deposits``; opens an unknown account as :meth:`withdraw` does.

        A transfer id the ledger holds, for ever, records nothing and answers ``repeated`` with the
        balance now; with another account or amount it raises :class:`TransferConflictError`. Raises
        ``DepositRefusedError`` (nothing recorded) when the balance plus the cents that refunds may
        still give back would pass ``MAX_BALANCE``.
        """
        row = await self._call(
            "SELECT balance, repeated FROM ledger_deposit($1, $2, $3, $4, $5)",
            _text(transfer_id, "transfer_id"),
            _text(account_id, "account_id"),
            _cents(amount, "amount"),
            _opening(opening),
            MAX_BALANCE,
        )
        return Deposit(account_id, row["balance"], row["repeated"])

    async def balance(self, account_id: str, *, opening: int | None) -> Balance:
        """The balance now.

        An unknown account reads as ``opening`` (nothing is stored), or raises
        :class:`AccountNotFoundError` when ``opening`` is None.
        """
        _text(account_id, "account_id")
        opening = _opening(opening)
        row = await self._fetchrow("SELECT balance FROM ledger_accounts WHERE id = $1", account_id)
        balance = None if row is None else row["balance"]
        if balance is None:
            if opening is None:
                raise AccountNotFoundError(f"account {account_id} not found")
            balance = opening
        return Balance(account_id, balance)

    async def statement(self, account_id: str, *, before: int | None, limit: int) -> Statement:
        """A page of the account's entries, newest first.

        Up to ``limit`` (at most :data:`MAX_PAGE`) entries older than entry ``before`` (None: from
        the newest); :class:`AccountNotFoundError` when the account is unknown.
        """
        _text(account_id, "account_id")
        if before is not None and (
            not isinstance(before, int) or isinstance(before, bool) or not 1 <= before <= MAX_ENTRY_ID
        ):
            raise LedgerArgumentError(f"before: must be an entry id from 1 to {MAX_ENTRY_ID}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
            raise LedgerArgumentError(f"limit: must be an integer from 1 to {MAX_PAGE}")
        # The account's row and its page in one query: no row at all means no such account.
        rows = await self._fetch(
            f"""
            SELECT {ENTRY_COLUMNS}
            FROM ledger_accounts a
            LEFT JOIN ledger_entries e
              ON e.account_id = a.id AND ($2::bigint IS NULL OR e.id < $2)
            LEFT JOIN ledger_transfers t ON t.id = e.transfer_id
            WHERE a.id = $1
            ORDER BY e.id DESC
            LIMIT $3
            """,  # noqa: S608 - the only text pasted is the constant column list
            account_id,
            before,
            limit + 1,
        )
        if not rows:
            raise AccountNotFoundError(f"account {account_id} not found")
        entries = tuple(entry_from_row(row) for row in rows[:limit] if row["id"] is not None)
        return Statement(account_id, entries, entries[-1].entry_id if len(rows) > limit else None)

    async def history(self, payment_id: str) -> list[Entry]:
        """Every entry of every transfer of ``payment_id``, across its lifecycles, oldest first."""
        _text(payment_id, "payment_id")
        rows = await self._fetch(
            f"""
            SELECT {ENTRY_COLUMNS}
            FROM ledger_transfers t JOIN ledger_entries e ON e.transfer_id = t.id
            WHERE t.payment_id = $1
            ORDER BY e.id
            """,  # noqa: S608 - the only text pasted is the constant column list
            payment_id,
        )
        return [entry_from_row(row) for row in rows]


__all__ = ["Ledger", "LedgerError"]
