"""Payment ids expire through Restate's durable timers, and are new again afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from payments.client import PaymentsClient
from payments.config import Settings
from payments.runtime.admin import Admin
from payments.tools.launcher import LaunchedStack
from tests.helpers import set_stored_payment, wait_until_new

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
WINDOW_SECONDS = 1


def stack_with_window(factory: pytest.TempPathFactory, seconds: int) -> Iterator[LaunchedStack]:
    data_dir: Path = factory.mktemp(f"expiry-{seconds}s")
    with LaunchedStack(data_dir, env={"PAYMENTS_EXPIRY_SECONDS": str(seconds)}) as launched:
        yield launched


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    yield from stack_with_window(tmp_path_factory, WINDOW_SECONDS)


@pytest.fixture
async def expiring(short_lived: LaunchedStack) -> AsyncIterator[PaymentsClient]:
    async with PaymentsClient(short_lived.settings.ingress_url) as client:
        yield client


async def test_completed_id_expires_and_can_be_charged_again(expiring: PaymentsClient, unique: str) -> None:
    assert (await expiring.make_payment(f"{unique}-p", f"{unique}-a", 40)).outcome == "completed"
    await wait_until_new(expiring, f"{unique}-p")
    assert (await expiring.make_payment(f"{unique}-p", f"{unique}-a", 40)).outcome == "completed"
    assert (await expiring.balance(f"{unique}-a")).balance == OPENING - 80


async def test_cancel_tombstone_expires(expiring: PaymentsClient, unique: str) -> None:
    assert (await expiring.cancel_payment(f"{unique}-p")).state == "CANCELLED"
    await wait_until_new(expiring, f"{unique}-p")
    assert (await expiring.make_payment(f"{unique}-p", f"{unique}-a", 40)).outcome == "completed"


async def test_refunded_payment_expires_with_its_money_back(expiring: PaymentsClient, unique: str) -> None:
    await expiring.make_payment(f"{unique}-p", f"{unique}-a", 40)
    await expiring.cancel_payment(f"{unique}-p")
    await wait_until_new(expiring, f"{unique}-p")
    assert (await expiring.balance(f"{unique}-a")).balance == OPENING


async def test_a_cancel_after_the_window_refunds_the_payment_once(
    expiring: PaymentsClient, unique: str
) -> None:
    """Cancel wins after the window too: the ledger remembers the charge the expired state forgot."""
    payment_id, account = f"{unique}-p", f"{unique}-a"
    await expiring.make_payment(payment_id, account, 40)
    await wait_until_new(expiring, payment_id)

    late = await expiring.cancel_payment(payment_id)
    again = await expiring.cancel_payment(payment_id)
    await wait_until_new(expiring, payment_id)
    after_its_own_window = await expiring.cancel_payment(payment_id)

    assert (late.outcome, late.state, late.amount, late.moneyMoved) == ("refunded", "CANCELLED", 40, True)
    assert (again.outcome, again.moneyMoved) == ("cancelled", False)
    assert (after_its_own_window.outcome, after_its_own_window.moneyMoved) == ("cancelled", False)
    assert (await expiring.balance(account)).balance == OPENING


LONG_WINDOW_SECONDS = 8
"""Long enough that the second lifecycle's timer cannot fire before the retry that follows the first's."""


@pytest.fixture(scope="module")
def long_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    yield from stack_with_window(tmp_path_factory, LONG_WINDOW_SECONDS)


async def timers_pending(admin: Admin, payment_id: str) -> int:
    """expireToken invocations of ``payment_id`` not yet done (done ones leave the table)."""
    rows = await admin.query(
        "SELECT count(*) AS pending FROM sys_invocation WHERE target_handler_name = 'expireToken'"
        f" AND target_service_key = '{payment_id}' AND status <> 'completed'"
    )
    return int(rows[0]["pending"])


async def test_a_timer_of_a_cleared_lifecycle_does_not_end_the_next(
    long_lived: LaunchedStack, unique: str
) -> None:
    """An operator clears a completed id's state, the id is paid again: the first timer must not end
    the second lifecycle, or a retry inside the second window would charge twice."""
    payment_id, account = f"{unique}-p", f"{unique}-a"
    async with (
        PaymentsClient(long_lived.settings.ingress_url) as client,
        Admin(long_lived.settings.admin_url) as admin,
    ):
        assert (await client.make_payment(payment_id, account, 40)).outcome == "completed"
        await set_stored_payment(long_lived.settings, payment_id, None)
        await wait_until_new(client, payment_id)
        await asyncio.sleep(LONG_WINDOW_SECONDS / 2)
        assert (await client.make_payment(payment_id, account, 40)).outcome == "completed"
        assert await timers_pending(admin, payment_id) == 2
        for _ in range(300):
            if await timers_pending(admin, payment_id) == 1:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the first lifecycle's timer did not fire")

        retry = await client.make_payment(payment_id, account, 40)

        assert (retry.outcome, retry.state) == ("repeated", "COMPLETED")
        assert (await client.balance(account)).balance == OPENING - 80
