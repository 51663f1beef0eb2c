"""Forgeries of the ledger: the schema refuses them, and reconcile names those planted past it.

Each test has a database of its own: a little real traffic through the ledger's functions, then one
forgery, planted as an attacker with a superuser's session would (triggers and foreign keys off,
the shape constraint dropped and put back unchecked, cached balances adjusted to match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg
import pytest

from payments.runtime.reconcile import read_ledger
from payments.service.ledger import Ledger
from payments.tools.launcher import LaunchedDatabase
from tests.helpers import fresh_ledger

pytestmark = pytest.mark.anyio
WINDOW_SECONDS: Final = 0.001
"""Short enough that two debits of one id are never taken for a charge twice in one lifecycle."""


@dataclass(frozen=True)
class Books:
    """A ledger with a little traffic: customers ``a`` and ``b``, a payment ``paid`` and one ``refunded``."""

    url: str
    paid: str = "payment:paid"
    refunded: str = "payment:refunded"


@pytest.fixture
async def books(database: LaunchedDatabase) -> Books:

    async def traffic(ledger: Ledger) -> None:
        await ledger.deposit("deposit:1", "a", 500, opening=1_000)
        await ledger.withdraw("payment:refunded", "a", 300, "p-refunded", opening=None)
        await ledger.withdraw("payment:paid", "a", 200, "p-paid", opening=None)
        await ledger.refund("refund:payment:refunded", "payment:refunded")
        await ledger.deposit("deposit:2", "a", 40, opening=None)
        await ledger.open_account("b", 1_000)

    return Books(await fresh_ledger(database.url, traffic))


async def problems(books: Books) -> set[str]:
    facts = await read_ledger(books.url, [], WINDOW_SECONDS)
    return {problem.check for problem in facts.problems}


async def as_attacker(books: Books, *statements: str) -> None:
    """Run ``statements`` in one transaction with triggers, foreign keys and the shape check off."""
    connection = await asyncpg.connect(books.url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute("ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfer_fits")
            for statement in statements:
                await connection.execute(statement)
            await connection.execute(
                "ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfer_fits"
                " CHECK (ledger_transfer_fits(id, kind, debit_account, credit_account)) NOT VALID"
            )
    finally:
        await connection.close()


def moved(account: str, cents: int) -> str:
    """Cached balance of ``account`` moved by ``cents``: the adjustment that hides a forgery from sums."""
    return f"UPDATE ledger_accounts SET balance = balance + {cents} WHERE id = '{account}'"


async def test_real_traffic_is_clean(books: Books) -> None:
    assert await problems(books) == set()


OTHER_SHARD: Final = (
    "(SELECT CASE WHEN credit_account = '@payments:0' THEN '@payments:1' ELSE '@payments:0' END"
    " FROM ledger_transfers WHERE id = 'payment:refunded')"
)
FORGERIES: Final = [
    pytest.param(
        [
            (
                f"UPDATE ledger_entries SET account_id = {OTHER_SHARD}"
                " WHERE transfer_id = 'refund:payment:refunded' AND account_id LIKE '@payments:%'"
            ),
            f"UPDATE ledger_transfers SET debit_account = {OTHER_SHARD} WHERE id = 'refund:payment:refunded'",
        ],
        "refund-mismatch",
        id="refund-from-another-payments-shard",
    ),
    pytest.param(
        ["SELECT ledger_post('open2:a', 'opening', 'a', '@openings', 500000, NULL, NULL, 0)"],
        "transfer-shape",
        id="second-opening",
    ),
    pytest.param(
        ["SELECT ledger_post('deposit:x', 'deposit', 'a', '@payments:3', 500, NULL, NULL, 0)"],
        "transfer-shape",
        id="deposit-from-a-payments-shard",
    ),
    pytest.param(
        [
            "UPDATE ledger_entries SET account_id = 'b' WHERE transfer_id = 'deposit:1' AND account_id = 'a'",
            moved("a", -500),
            moved("b", 500),
        ],
        "entry-mismatch",
        id="entry-moved-to-another-customer",
    ),
    pytest.param(
        [
            "UPDATE ledger_entries SET amount = -amount WHERE transfer_id = 'payment:paid'",
            (
                "UPDATE ledger_entries SET balance_after = balance_after + 400 WHERE account_id = 'a' AND id"
                " >= (SELECT id FROM ledger_entries WHERE transfer_id = 'payment:paid' AND account_id = 'a')"
            ),
            moved("a", 400),
            (
                "UPDATE ledger_accounts SET balance = balance - 400"
                " WHERE id = (SELECT credit_account FROM ledger_transfers WHERE id = 'payment:paid')"
            ),
        ],
        "entry-mismatch",
        id="payment-with-its-signs-swapped",
    ),
    pytest.param(
        [
            "DELETE FROM ledger_entries WHERE transfer_id = 'deposit:1'",
            "DELETE FROM ledger_transfers WHERE id = 'deposit:1'",
            moved("a", -500),
            moved("@deposits", 500),
        ],
        "running-balance",
        id="transfer-deleted-with-its-entries",
    ),
    pytest.param(
        [
            (
                "INSERT INTO ledger_entries (transfer_id, account_id, amount, balance_after)"
                " SELECT 'ghost', 'b', 50, balance + 50 FROM ledger_accounts WHERE id = 'b'"
            ),
            moved("b", 50),
            moved("@deposits", -50),
        ],
        "entry-mismatch",
        id="entry-without-a-transfer",
    ),
]


@pytest.mark.parametrize(("statements", "check"), FORGERIES)
async def test_a_forgery_planted_past_the_schema_is_named(
    books: Books, statements: list[str], check: str
) -> None:
    await as_attacker(books, *statements)

    assert check in await problems(books)


REFUSED: Final = [
    pytest.param(
        "SELECT ledger_post('open2:a', 'opening', 'a', '@openings', 500000, NULL, NULL, 0)",
        id="second-opening",
    ),
    pytest.param(
        "SELECT ledger_post('deposit:x', 'deposit', 'a', '@payments:3', 500, NULL, NULL, 0)",
        id="deposit-from-a-payments-shard",
    ),
    pytest.param(
        "SELECT ledger_post('payment:x', 'payment', 'a', '@deposits', -500, 'p-x', NULL, 500)",
        id="payment-to-the-deposits-account",
    ),
    pytest.param(
        "SELECT ledger_post('refund:x', 'refund', 'a', '@payments:1', 250, 'p-paid', 'payment:paid', -250)",
        id="refund-of-another-amount",
    ),
    pytest.param(
        "SELECT ledger_post('refund:y', 'refund', 'b', '@payments:1', 200, 'p-paid', 'payment:paid', 0)",
        id="refund-to-another-customer",
    ),
]


@pytest.mark.parametrize("statement", REFUSED)
async def test_the_schema_refuses_a_transfer_that_does_not_fit_its_kind(books: Books, statement: str) -> None:
    connection = await asyncpg.connect(books.url)
    try:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await connection.execute(statement)
    finally:
        await connection.close()

    assert refused.value.sqlstate in {"23514", "LG400"}, refused.value
    assert await problems(books) == set()
