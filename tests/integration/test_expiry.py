"""Payment ids expire through Restate's durable timers, and are new again afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from payments.client import PaymentsClient
from payments.config import Settings
from payments.launcher import LaunchedStack

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
WINDOW_SECONDS = 1


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    data_dir: Path = tmp_path_factory.mktemp("expiry")
    with LaunchedStack(data_dir, env={"PAYMENTS_EXPIRY_SECONDS": str(WINDOW_SECONDS)}) as launched:
        yield launched


@pytest.fixture
async def expiring(short_lived: LaunchedStack) -> AsyncIterator[PaymentsClient]:
    async with PaymentsClient(short_lived.settings.ingress_url) as client:
        yield client


async def wait_until_new(client: PaymentsClient, payment_id: str) -> None:
    for _ in range(300):
        if (await client.get_status(payment_id)).state == "NEW":
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{payment_id} did not expire")


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
