"""The ledger's pure parts: its records' JSON round trip, its argument checks, its migrations."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import cast

import asyncpg
import pytest

from payments.domain.balances import MAX_BALANCE
from payments.service.ledger import (
    Balance,
    Debit,
    Deposit,
    Entry,
    Ledger,
    LedgerFaultError,
    Refund,
    Statement,
    Withdrawal,
)
from payments.service.ledger.migrate import migrations

pytestmark = pytest.mark.anyio

ENTRY = Entry(7, "t-1", "a", "payment", -100, "p-1", "2026-11-30T13:00:00+00:00", 900)
RECORDS = [
    Balance("a", 5),
    Deposit("a", 5, repeated=True),
    Withdrawal("t-1", "posted", 900),
    Withdrawal("t-2", "declined", None),
    Refund("r-1", "t-1", "a", 100, 1000),
    Debit("t-1", "a", 100, "p-1", "2026-11-30T13:00:00+00:00"),
    ENTRY,
    Statement("a", (ENTRY, ENTRY), 7),
    Statement("a", (), None),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: type(record).__name__)
def test_a_record_survives_a_trip_through_json(record: Balance | Statement) -> None:
    assert type(record).from_json(json.loads(json.dumps(record.to_json()))) == record


def unreachable_ledger() -> Ledger:
    """A ledger whose pool fails any use: an argument check must refuse before a round trip."""
    return Ledger(cast("asyncpg.Pool[asyncpg.Record]", object()))


LEDGER = unreachable_ledger()
BAD_CALLS: list[tuple[str, Callable[[], Awaitable[object]]]] = [
    ("limit", lambda: LEDGER.statement("a", before=None, limit=0)),
    ("limit", lambda: LEDGER.statement("a", before=None, limit=101)),
    ("limit", lambda: LEDGER.statement("a", before=None, limit=True)),
    ("before", lambda: LEDGER.statement("a", before=-1, limit=10)),
    ("before", lambda: LEDGER.statement("a", before=0, limit=10)),
    ("before", lambda: LEDGER.statement("a", before=2**63, limit=10)),
    ("account_id", lambda: LEDGER.statement("", before=None, limit=10)),
    ("amount", lambda: LEDGER.withdraw("t", "a", 0, "p", opening=None)),
    ("amount", lambda: LEDGER.withdraw("t", "a", -5, "p", opening=None)),
    ("amount", lambda: LEDGER.deposit("t", "a", MAX_BALANCE + 1, opening=None)),
    ("amount", lambda: LEDGER.deposit("t", "a", cast("int", 1.5), opening=None)),
    ("opening", lambda: LEDGER.withdraw("t", "a", 5, "p", opening=-1)),
    ("opening", lambda: LEDGER.open_account("a", -1)),
    ("opening", lambda: LEDGER.balance("a", opening=-1)),
    ("transfer_id", lambda: LEDGER.withdraw("", "a", 5, "p", opening=None)),
    ("transfer_id", lambda: LEDGER.refund("t\x00", "d")),
    ("debit_id", lambda: LEDGER.refund("t", "")),
    ("payment_id", lambda: LEDGER.withdraw("t", "a", 5, "\ud800", opening=None)),
    ("payment_id", lambda: LEDGER.history("")),
    ("payment_id", lambda: LEDGER.last_unrefunded_debit("")),
]


@pytest.mark.parametrize(("field", "call"), BAD_CALLS)
async def test_a_bad_argument_is_a_value_error_naming_it(
    field: str, call: Callable[[], Awaitable[object]]
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        await call()


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert migrations()[0][1] == "0001_ledger"


class FailingPool:
    """A pool whose every query fails with ``error``, as PostgreSQL would raise it."""

    def __init__(self, error: asyncpg.PostgresError) -> None:
        self.error = error

    async def fetchrow(self, *_: object) -> None:
        raise self.error


def failing(error: asyncpg.PostgresError) -> Ledger:
    return Ledger(cast("asyncpg.Pool[asyncpg.Record]", FailingPool(error)))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.SerializationError("serialization"),
        asyncpg.exceptions.TooManyConnectionsError("full"),
        asyncpg.exceptions.AdminShutdownError("shutting down"),
        asyncpg.exceptions.CannotConnectNowError("starting"),
        asyncpg.exceptions.QueryCanceledError("statement timeout"),
        asyncpg.exceptions.LockNotAvailableError("lock timeout"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("a standby"),
    ],
    ids=type,
)
async def test_a_passing_failure_is_raised_for_a_retry(error: asyncpg.PostgresError) -> None:
    with pytest.raises(type(error)):
        await failing(error).balance("a", opening=None)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.RaiseError("a bug in the ledger's SQL"),
        asyncpg.exceptions.UndefinedTableError("no ledger_accounts"),
        asyncpg.exceptions.InsufficientPrivilegeError("permission denied"),
        asyncpg.exceptions.ObjectInUseError("in use"),
    ],
    ids=type,
)
async def test_a_refusal_no_retry_mends_is_a_ledger_fault(error: asyncpg.PostgresError) -> None:
    with pytest.raises(LedgerFaultError, match=rf"{type(error).__name__} \(SQLSTATE {error.sqlstate}\)"):
        await failing(error).balance("a", opening=None)
