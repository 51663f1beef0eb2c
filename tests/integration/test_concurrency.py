"""Many calls for the same ids at once: at most one charge, and a cancel always wins."""

from __future__ import annotations

import asyncio

import pytest

from payments.client import PaymentsClient
from payments.config import Settings

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance


async def test_fifty_concurrent_payments_for_one_id_withdraw_once(
    client: PaymentsClient, unique: str
) -> None:
    answers = await asyncio.gather(
        *(client.make_payment(f"{unique}-p", f"{unique}-a", 700) for _ in range(50))
    )
    assert sorted(answer.outcome for answer in answers) == ["completed"] + ["repeated"] * 49
    assert sum(answer.moneyMoved for answer in answers) == 1
    assert (await client.balance(f"{unique}-a")).balance == OPENING - 700


@pytest.mark.parametrize("cancel_first", [False, True], ids=["pay-then-cancel", "cancel-then-pay"])
async def test_concurrent_pay_and_cancel_net_to_zero(
    client: PaymentsClient, unique: str, cancel_first: bool
) -> None:
    account = f"{unique}-a"

    async def pair(index: int) -> None:
        payment_id = f"{unique}-p{index}"
        pay = client.make_payment(payment_id, account, 100 + index)
        cancel = client.cancel_payment(payment_id)
        calls = (cancel, pay) if cancel_first else (pay, cancel)
        first = asyncio.ensure_future(calls[0])
        await asyncio.gather(first, calls[1])

    await asyncio.gather(*(pair(index) for index in range(25)))
    statuses = await asyncio.gather(*(client.get_status(f"{unique}-p{i}") for i in range(25)))
    assert {status.state for status in statuses} == {"CANCELLED"}
    assert (await client.balance(account)).balance == OPENING


async def test_duplicated_storm_over_shared_accounts_conserves_money(
    client: PaymentsClient, unique: str
) -> None:
    accounts = [f"{unique}-a{i}" for i in range(3)]
    payments = {f"{unique}-p{i}": (accounts[i % 3], 10 + i) for i in range(30)}
    cancelled = {payment_id for i, payment_id in enumerate(payments) if i % 4 == 0}
    calls = [client.make_payment(p, a, amount) for p, (a, amount) in payments.items() for _ in range(3)]
    calls += [client.cancel_payment(p) for p in cancelled]
    await asyncio.gather(*calls)
    for account in accounts:
        charged = sum(amount for p, (a, amount) in payments.items() if a == account and p not in cancelled)
        assert (await client.balance(account)).balance == OPENING - charged
