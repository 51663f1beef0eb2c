"""Deposits and balances."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments.client import PaymentsClient, ServiceError
from payments.config import Settings
from payments.domain.balances import MAX_BALANCE
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance


async def test_new_account_has_the_opening_balance(client: PaymentsClient, unique: str) -> None:
    assert (await client.balance(f"{unique}-a")).balance == OPENING


async def test_deposits_add_up_and_a_retried_key_deposits_once(client: PaymentsClient, unique: str) -> None:
    account = f"{unique}-a"
    assert (await client.deposit(account, 5)).balance == OPENING + 5
    assert (await client.deposit(account, 5)).balance == OPENING + 10
    first = await client.deposit(account, 7, idempotency_key=f"{unique}-k")
    again = await client.deposit(account, 7, idempotency_key=f"{unique}-k")
    assert first == again
    assert (await client.balance(account)).balance == OPENING + 17


async def test_a_refund_cannot_lift_a_balance_above_the_maximum(tmp_path: Path) -> None:
    """Pay, deposit up to the maximum, cancel: the deposit that leaves no room for the refund is refused."""
    with LaunchedStack(tmp_path, env={"PAYMENTS_OPENING_BALANCE": str(MAX_BALANCE)}) as stack:
        async with PaymentsClient(stack.settings.ingress_url) as client:
            await client.make_payment("p", "a", 100)
            with pytest.raises(ServiceError) as refused:
                await client.deposit("a", 100)
            assert (refused.value.status, refused.value.message.split(":")[0]) == (400, "amount")
            assert (await client.cancel_payment("p")).outcome == "refunded"
            assert (await client.balance("a")).balance == MAX_BALANCE
