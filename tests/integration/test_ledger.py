"""The ledger against a real PostgreSQL (the embedded one ``payments up`` runs)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from payments.domain.balances import MAX_BALANCE, DepositRefusedError
from payments.service.ledger import (
    AccountNotFoundError,
    DebitNotFoundError,
    Deposit,
    Ledger,
    TransferConflictError,
    Withdrawal,
)
from payments.service.ledger.migrate import migrations
from payments.tools.launcher import LaunchedDatabase
from tests.helpers import fresh_database, payments_cli

T = TypeVar("T")

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ledger(database: LaunchedDatabase) -> AsyncIterator[Ledger]:
    """A ledger on the module's database, migrated, with room for 20 calls at once."""
    opened = await Ledger.connect(database.url, max_size=20)
    await opened.migrate()
    yield opened
    await opened.close()


WAITING_FOR_A_LOCK = "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"


async def all_at_once(database: LaunchedDatabase, account: str, calls: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``calls`` with ``account`` locked until every one of them waits for it, so that they race."""
    holder = await asyncpg.connect(database.url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT FROM ledger_accounts WHERE id = $1 FOR UPDATE", account)
            racing = asyncio.gather(*calls)
            for _ in range(1000):
                if await holder.fetchval(WAITING_FOR_A_LOCK) == len(calls):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail(f"the {len(calls)} calls never all waited for {account}")
        return await racing
    finally:
        await holder.close()


async def test_migrations_apply_once_even_when_processes_start_together(database: LaunchedDatabase) -> None:
    url = await fresh_database(database.url)
    ledgers = [await Ledger.connect(url, max_size=2) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(ledger.migrate() for ledger in ledgers))
        # Each file once, by whichever process took its lock first.
        assert sorted(name for names in applied for name in names) == [name for _, name, _ in migrations()]
        assert await ledgers[0].migrate() == []
    finally:
        for ledger in ledgers:
            await ledger.close()
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == len(migrations())
    finally:
        await connection.close()


async def test_a_repeated_write_answers_the_first_result_and_records_nothing(
    ledger: Ledger, unique: str
) -> None:
    account = f"{unique}-a"
    first = await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-p", opening=1000)
    deposited = await ledger.deposit(f"{unique}-d", account, 50, opening=None)
    assert await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-p", opening=1000) == first
    assert first == Withdrawal(f"{unique}-w", "posted", 700)
    await ledger.withdraw(f"{unique}-w2", account, 5, f"{unique}-p2", opening=None)

    again = await ledger.deposit(f"{unique}-d", account, 50, opening=None)

    assert deposited == Deposit(account, 750, repeated=False)
    assert again == Deposit(account, 745, repeated=True), "a repeat says so, with the balance now"
    assert (await ledger.balance(account, opening=None)).balance == 745


async def test_a_declined_withdrawal_is_recorded_and_replayed_as_declined(
    ledger: Ledger, unique: str
) -> None:
    account = f"{unique}-a"
    declined = await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-p", opening=100)
    assert declined == Withdrawal(f"{unique}-w", "declined", None)
    await ledger.deposit(f"{unique}-d", account, 1000, opening=None)
    assert await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-p", opening=100) == declined
    assert (await ledger.balance(account, opening=None)).balance == 1100


async def test_a_transfer_id_with_other_parameters_is_a_conflict(ledger: Ledger, unique: str) -> None:
    account = f"{unique}-a"
    await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-p", opening=1000)
    with pytest.raises(TransferConflictError):
        await ledger.withdraw(f"{unique}-w", account, 301, f"{unique}-p", opening=1000)
    with pytest.raises(TransferConflictError):
        await ledger.withdraw(f"{unique}-w", f"{unique}-b", 300, f"{unique}-p", opening=1000)
    with pytest.raises(TransferConflictError):
        await ledger.withdraw(f"{unique}-w", account, 300, f"{unique}-q", opening=1000)
    with pytest.raises(TransferConflictError):
        await ledger.deposit(f"{unique}-w", account, 300, opening=None)
    with pytest.raises(TransferConflictError):
        await ledger.open_account(account, 999)
    assert (await ledger.balance(account, opening=None)).balance == 700
    assert (await ledger.balance(f"{unique}-b", opening=5)).balance == 5, "b was never opened"


async def test_opening(ledger: Ledger, unique: str) -> None:
    with pytest.raises(AccountNotFoundError):
        await ledger.withdraw(f"{unique}-w", f"{unique}-a", 1, f"{unique}-p", opening=None)
    with pytest.raises(AccountNotFoundError):
        await ledger.deposit(f"{unique}-d", f"{unique}-a", 1, opening=None)
    # Reading an unknown account stores nothing.
    assert (await ledger.balance(f"{unique}-a", opening=40)).balance == 40
    with pytest.raises(AccountNotFoundError):
        await ledger.balance(f"{unique}-a", opening=None)
    with pytest.raises(AccountNotFoundError):
        await ledger.statement(f"{unique}-a", before=None, limit=10)

    assert (await ledger.open_account(f"{unique}-a", 40)).balance == 40
    await ledger.deposit(f"{unique}-d", f"{unique}-a", 2, opening=None)
    assert (await ledger.open_account(f"{unique}-a", 40)).balance == 40, "the opening's own result"
    assert (await ledger.balance(f"{unique}-a", opening=None)).balance == 42

    assert (await ledger.open_account(f"{unique}-z", 0)).balance == 0
    assert (await ledger.open_account(f"{unique}-z", 0)).balance == 0
    assert (await ledger.statement(f"{unique}-z", before=None, limit=10)).entries == ()
    with pytest.raises(TransferConflictError):
        await ledger.open_account(f"{unique}-z", 1)


async def test_concurrent_withdrawals_never_overdraw(ledger: Ledger, unique: str) -> None:
    account = f"{unique}-a"
    await ledger.open_account(account, 1000)
    results = await asyncio.gather(
        *(ledger.withdraw(f"{unique}-w{n}", account, 30, f"{unique}-p{n}", opening=None) for n in range(50))
    )
    posted = [result for result in results if result.posted]
    assert len(posted) == 1000 // 30
    assert sorted(result.balance for result in posted if result.balance is not None) == list(
        range(1000 % 30, 1000 - 29, 30)
    )
    assert (await ledger.balance(account, opening=None)).balance == 1000 - 30 * len(posted)


async def test_one_transfer_id_sent_from_many_tasks_at_once_records_once(
    ledger: Ledger, database: LaunchedDatabase, unique: str
) -> None:
    account = f"{unique}-a"
    await ledger.open_account(account, 100)
    calls = [ledger.withdraw(f"{unique}-w", account, 30, f"{unique}-p", opening=None) for _ in range(20)]
    results = await all_at_once(database, account, calls)
    assert set(results) == {Withdrawal(f"{unique}-w", "posted", 70)}
    assert len(await ledger.history(f"{unique}-p")) == 2


async def test_a_debit_is_refunded_once_whatever_the_refund_id(
    ledger: Ledger, database: LaunchedDatabase, unique: str
) -> None:
    account = f"{unique}-a"
    debit = await ledger.withdraw(f"{unique}-w", account, 30, f"{unique}-p", opening=100)
    assert (await ledger.last_unrefunded_debit(f"{unique}-p")) is not None
    calls = [ledger.refund(f"{unique}-r{n}", debit.transfer_id) for n in range(10)]
    refunds = await all_at_once(database, account, calls)
    assert len(set(refunds)) == 1
    first = refunds[0]
    assert (first.debit_id, first.account_id, first.amount, first.balance) == (
        debit.transfer_id,
        account,
        30,
        100,
    )
    assert await ledger.refund(f"{unique}-r-late", debit.transfer_id) == first
    assert (await ledger.balance(account, opening=None)).balance == 100
    assert await ledger.last_unrefunded_debit(f"{unique}-p") is None
    with pytest.raises(TransferConflictError):
        await ledger.refund(first.transfer_id, f"{unique}-other")


async def test_only_a_posted_debit_can_be_refunded(ledger: Ledger, unique: str) -> None:
    declined = await ledger.withdraw(f"{unique}-w", f"{unique}-a", 300, f"{unique}-p", opening=100)
    opening = f"open:{unique}-a"
    for debit_id in (declined.transfer_id, opening, f"{unique}-missing"):
        with pytest.raises(DebitNotFoundError):
            await ledger.refund(f"{unique}-r", debit_id)


async def test_the_newest_unrefunded_debit_of_a_payment_id(ledger: Ledger, unique: str) -> None:
    payment = f"{unique}-p"
    older = await ledger.withdraw(f"{unique}-w1", f"{unique}-a", 10, payment, opening=100)
    newer = await ledger.withdraw(f"{unique}-w2", f"{unique}-a", 20, payment, opening=100)
    found = await ledger.last_unrefunded_debit(payment)
    assert found is not None
    assert (found.transfer_id, found.amount, found.account_id) == (newer.transfer_id, 20, f"{unique}-a")
    await ledger.refund(f"{unique}-r2", newer.transfer_id)
    found = await ledger.last_unrefunded_debit(payment)
    assert found is not None
    assert found.transfer_id == older.transfer_id
    history = await ledger.history(payment)
    assert [
        (entry.transfer_id, entry.kind, entry.amount)
        for entry in history
        if entry.account_id == f"{unique}-a"
    ] == [
        (older.transfer_id, "payment", -10),
        (newer.transfer_id, "payment", -20),
        (f"{unique}-r2", "refund", 20),
    ]
    assert sum(entry.amount for entry in history) == 0


async def test_a_deposit_leaves_room_for_the_refunds(ledger: Ledger, unique: str) -> None:
    account = f"{unique}-a"
    debit = await ledger.withdraw(f"{unique}-w", account, 100, f"{unique}-p", opening=MAX_BALANCE - 100)
    with pytest.raises(
        DepositRefusedError, match=r"^amount: the balance plus 100 cents that cancels may refund would"
    ):
        await ledger.deposit(f"{unique}-d", account, 101, opening=None)
    assert (await ledger.deposit(f"{unique}-d", account, 100, opening=None)).balance == MAX_BALANCE - 100
    assert (await ledger.refund(f"{unique}-r", debit.transfer_id)).balance == MAX_BALANCE
    with pytest.raises(DepositRefusedError, match=r"^amount: "):
        await ledger.deposit(f"{unique}-d2", account, 1, opening=None)


async def test_statement_pages(ledger: Ledger, unique: str) -> None:
    account = f"{unique}-a"
    await ledger.open_account(account, 5)
    for n in range(7):
        await ledger.deposit(f"{unique}-d{n}", account, n + 1, opening=None)
    pages = []
    before = None
    while True:
        page = await ledger.statement(account, before=before, limit=3)
        pages.append(page.entries)
        if page.next_before is None:
            break
        before = page.next_before
    assert [len(page) for page in pages] == [3, 3, 2]
    entries = [entry for page in pages for entry in page]
    assert [entry.transfer_id for entry in entries] == [f"{unique}-d{n}" for n in reversed(range(7))] + [
        f"open:{account}"
    ]
    assert [entry.balance_after for entry in entries] == [33, 26, 20, 15, 11, 8, 6, 5]
    assert entries[0].kind == "deposit"
    assert entries[-1].kind == "opening"
    assert entries[0].created_at.endswith("+00:00")
    assert (await ledger.statement(account, before=entries[-1].entry_id, limit=3)).entries == ()


async def test_after_a_random_workload_the_books_balance(
    ledger: Ledger, database: LaunchedDatabase, unique: str
) -> None:
    rng = random.Random(12)
    accounts = [f"{unique}-a{n}" for n in range(5)]
    debits: list[str] = []

    async def worker(worker_id: int) -> None:
        for step in range(40):
            account = rng.choice(accounts)
            transfer = f"{unique}-{worker_id}-{step}"
            kind = rng.random()
            if kind < 0.5:
                result = await ledger.withdraw(transfer, account, rng.randint(1, 400), transfer, opening=500)
                if result.posted:
                    debits.append(transfer)
            elif kind < 0.8 and debits:
                await ledger.refund(f"refund:{transfer}", rng.choice(debits))
            else:
                await ledger.deposit(transfer, account, rng.randint(1, 200), opening=500)

    await asyncio.gather(*(worker(n) for n in range(8)))
    connection = await asyncpg.connect(database.url)
    try:
        assert await connection.fetchval("SELECT sum(balance) FROM ledger_accounts") == 0
        assert (
            await connection.fetch(
                """
            SELECT a.id FROM ledger_accounts a
            LEFT JOIN ledger_entries e ON e.account_id = a.id
            GROUP BY a.id, a.balance
            HAVING a.balance <> coalesce(sum(e.amount), 0)
               OR a.balance <> coalesce((array_agg(e.balance_after ORDER BY e.id DESC))[1], 0)
            """
            )
            == []
        )
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM ledger_accounts WHERE kind = 'customer' AND balance < 0"
            )
            == 0
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("UPDATE ledger_entries SET amount = amount + 1", "ledger_entries"),
        ("DELETE FROM ledger_entries", "ledger_entries"),
        ("TRUNCATE ledger_entries", "ledger_entries"),
        ("UPDATE ledger_transfers SET amount = amount + 1", "ledger_transfers"),
        ("DELETE FROM ledger_transfers", "ledger_transfers"),
        # A table that others reference can only be truncated together with them.
        ("TRUNCATE ledger_transfers, ledger_entries", "ledger_transfers"),
        ("DELETE FROM ledger_accounts", "ledger_accounts"),
        ("TRUNCATE ledger_accounts, ledger_transfers, ledger_entries", "ledger_accounts"),
    ],
)
async def test_the_books_cannot_be_rewritten(
    ledger: Ledger, database: LaunchedDatabase, unique: str, statement: str, table: str
) -> None:
    await ledger.withdraw(f"{unique}-w", f"{unique}-a", 10, f"{unique}-p", opening=100)
    connection = await asyncpg.connect(database.url)
    try:
        with pytest.raises(
            asyncpg.PostgresError, match=f"of {table} refused: the ledger is append-only"
        ) as refused:
            await connection.execute(statement)
        assert refused.value.sqlstate == "LG403"
    finally:
        await connection.close()
    assert len(await ledger.history(f"{unique}-p")) == 2


async def test_the_database_refuses_a_negative_customer_balance(
    ledger: Ledger, database: LaunchedDatabase, unique: str
) -> None:
    await ledger.open_account(f"{unique}-a", 10)
    connection = await asyncpg.connect(database.url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE ledger_accounts SET balance = -1 WHERE id = $1", f"{unique}-a")
    finally:
        await connection.close()


async def test_history_says_in_one_line_that_the_ledger_refused(database: LaunchedDatabase) -> None:
    """A database without the ledger's tables, and a role the server does not know."""
    unmigrated = await fresh_database(database.url)
    stranger = urlunsplit(urlsplit(database.url)._replace(netloc="nobody-we-know@"))
    for url, error in ((unmigrated, "UndefinedTableError"), (stranger, "InvalidPasswordError")):
        result = payments_cli("history", "p", env={"PAYMENTS_DATABASE_URL": url})

        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("payments: the ledger refused to read: ")
        assert error in result.stderr
