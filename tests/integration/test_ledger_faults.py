"""The ledger's database failing under a burst of payments: every payment completes, charged once.

PostgreSQL killed with SIGKILL, PostgreSQL frozen for 10 s, and the service dying right after a
withdrawal's commit inside ``ctx.run``: afterwards the ledger holds one posted debit per payment id,
each account lost exactly what was paid from it, and ``payments reconcile`` is clean.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from payments.client import PaymentsClient, until_answered
from payments.config import Part, Settings
from payments.runtime.reconcile import reconcile
from payments.tools.launcher import LaunchedStack
from tests.integration.crash_after_commit import FILE_VARIABLE

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
BURST = 200
ACCOUNTS = 5
FROZEN_SECONDS = 10.0
CLIENT_TIMEOUT_SECONDS = 120.0

Payments = dict[str, tuple[str, int]]
"""Payment id -> (account, amount)."""


def payments(unique: str, count: int) -> Payments:
    """``count`` distinct payment ids over a few accounts, whose total stays within the opening balance."""
    return {f"{unique}-p{i}": (f"{unique}-a{i % ACCOUNTS}", 1 + i) for i in range(count)}


async def pay_all(
    stack: LaunchedStack,
    amounts: Payments,
    during: Callable[[Callable[[], int]], Awaitable[None]],
    *,
    retry: bool,
) -> list[str]:
    """Send every payment at once and, once a quarter are answered, run ``during``; the outcomes.

    ``during`` gets a function that tells how many payments are answered so far.

    With ``retry``, a client that loses its connection or gets a 5xx sends the same payment again,
    as the contract asks; without, any error fails the test.
    """
    answered = 0
    quarter_answered = asyncio.Event()

    async def pay(client: PaymentsClient, payment_id: str) -> str:
        nonlocal answered
        account, amount = amounts[payment_id]

        async def call() -> str:
            return (await client.make_payment(payment_id, account, amount)).outcome

        outcome = await (until_answered(call) if retry else call())
        answered += 1
        if answered >= len(amounts) // 4:
            quarter_answered.set()
        return outcome

    async with PaymentsClient(stack.settings.ingress_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        burst = asyncio.gather(*(pay(client, payment_id) for payment_id in amounts))
        await quarter_answered.wait()
        await during(lambda: answered)
        return await burst


async def assert_charged_once(stack: LaunchedStack, amounts: Payments) -> None:
    """One posted debit per payment id in the ledger, balances down by exactly the sums, reconcile clean."""
    connection = await asyncpg.connect(stack.settings.ledger_url)
    try:
        rows = await connection.fetch(
            "SELECT payment_id, count(*) AS debits FROM ledger_transfers"
            " WHERE kind = 'payment' AND status = 'posted' AND payment_id = ANY($1::text[])"
            " GROUP BY payment_id",
            list(amounts),
        )
    finally:
        await connection.close()
    assert {row["payment_id"]: row["debits"] for row in rows} == dict.fromkeys(amounts, 1)
    async with PaymentsClient(stack.settings.ingress_url) as client:
        for account in sorted({account for account, _ in amounts.values()}):
            charged = sum(amount for a, amount in amounts.values() if a == account)
            assert (await client.balance(account)).balance == OPENING - charged
    result = await reconcile(stack.settings)
    assert result.problems == ()
    assert result.in_flight == 0


async def test_sigkill_of_postgres_in_a_burst_charges_every_payment_once(
    stack: LaunchedStack, unique: str
) -> None:
    amounts = payments(unique, BURST)
    killed: list[int] = []

    async def kill_database(_answered: Callable[[], int]) -> None:
        killed.append(stack.kill(Part.DATABASE))

    outcomes = await pay_all(stack, amounts, kill_database, retry=True)

    assert set(outcomes) <= {"completed", "repeated"}
    assert stack.pid(Part.DATABASE) != killed[0]
    await assert_charged_once(stack, amounts)


@contextlib.contextmanager
def frozen(postmaster: int) -> Iterator[None]:
    """SIGSTOP PostgreSQL (the postmaster first, so that it starts no new backend) until the block ends."""
    processes = [psutil.Process(postmaster)]
    processes[0].suspend()
    try:
        processes += processes[0].children(recursive=True)
        for child in processes[1:]:
            child.suspend()
        yield
    finally:
        for process in reversed(processes):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


@pytest.mark.slow
async def test_postgres_frozen_for_ten_seconds_makes_payments_wait_not_fail(
    stack: LaunchedStack, unique: str
) -> None:
    amounts = payments(unique, BURST)
    answered_when_thawed: list[int] = []

    async def freeze_database(answered: Callable[[], int]) -> None:
        with frozen(stack.pid(Part.DATABASE)):
            await asyncio.sleep(FROZEN_SECONDS)
            answered_when_thawed.append(answered())

    outcomes = await pay_all(stack, amounts, freeze_database, retry=False)

    # Payments were still waiting for the database when it came back: the freeze was under load.
    assert answered_when_thawed[0] < BURST
    assert set(outcomes) == {"completed"}
    await assert_charged_once(stack, amounts)


@pytest.fixture(scope="module")
def crashing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LaunchedStack, Path]]:
    """A stack whose service dies once per payment id right after its withdrawal commits."""
    data_dir = Path(tmp_path_factory.mktemp("crash-after-commit"))
    crashed = data_dir / "crashed-ids"
    crashed.write_text("")
    env = {"PAYMENTS_SERVICE_MODULE": "tests.integration.crash_after_commit", FILE_VARIABLE: str(crashed)}
    with LaunchedStack(data_dir, env=env) as launched:
        yield launched, crashed


@pytest.mark.slow
async def test_a_service_dying_after_the_commit_charges_each_payment_once(
    crashing_stack: tuple[LaunchedStack, Path], unique: str
) -> None:
    stack, crashed = crashing_stack
    amounts = payments(unique, 4)

    async def nothing(_answered: Callable[[], int]) -> None:
        pass

    outcomes = await pay_all(stack, amounts, nothing, retry=True)

    assert set(outcomes) <= {"completed", "repeated"}
    # The service died after the commit of every payment's withdrawal, and each was taken once.
    assert sorted(crashed.read_text().split()) == sorted(amounts)
    await assert_charged_once(stack, amounts)
