"""Deposits and balances."""

from __future__ import annotations

import pytest

from payments.client import PaymentsClient
from payments.config import Settings

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
