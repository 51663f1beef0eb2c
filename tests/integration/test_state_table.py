"""Every cell of the contract's state table, against the real service."""

from __future__ import annotations

import pytest

from payments.client import PaymentsClient, ServiceError
from payments.config import Settings
from payments.runtime.admin import Admin

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance


async def balance(client: PaymentsClient, account: str) -> int:
    return (await client.balance(account)).balance


async def test_unknown_id_is_new(client: PaymentsClient, unique: str) -> None:
    status = await client.get_status(f"{unique}-p")
    assert (status.state, status.outcome, status.moneyMoved) == ("NEW", "status", False)


async def test_new_pay_withdraws_once_and_completes(client: PaymentsClient, unique: str) -> None:
    answer = await client.make_payment(f"{unique}-p", f"{unique}-a", 250)
    assert (answer.state, answer.outcome, answer.moneyMoved) == ("COMPLETED", "completed", True)
    assert (answer.accountId, answer.amount) == (f"{unique}-a", 250)
    assert await balance(client, f"{unique}-a") == OPENING - 250
    assert (await client.get_status(f"{unique}-p")).state == "COMPLETED"


async def test_new_pay_without_funds_is_declined_and_stays_new(client: PaymentsClient, unique: str) -> None:
    account = f"{unique}-a"
    answer = await client.make_payment(f"{unique}-p", account, OPENING + 1)
    assert (answer.state, answer.outcome, answer.moneyMoved) == ("NEW", "declined", False)
    assert await balance(client, account) == OPENING
    assert (await client.get_status(f"{unique}-p")).state == "NEW"
    await client.deposit(account, 1)
    retried = await client.make_payment(f"{unique}-p", account, OPENING + 1)
    assert retried.outcome == "completed"
    assert await balance(client, account) == 0


async def test_new_cancel_leaves_a_tombstone_that_blocks_the_payment(
    client: PaymentsClient, unique: str
) -> None:
    cancelled = await client.cancel_payment(f"{unique}-p")
    assert (cancelled.state, cancelled.outcome, cancelled.moneyMoved) == (
        "CANCELLED",
        "cancelled",
        False,
    )
    blocked = await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    assert (blocked.state, blocked.outcome, blocked.moneyMoved) == ("CANCELLED", "cancelled", False)
    assert await balance(client, f"{unique}-a") == OPENING


async def test_completed_pay_again_answers_the_stored_result(client: PaymentsClient, unique: str) -> None:
    first = await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    again = await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    assert (again.state, again.outcome, again.moneyMoved) == ("COMPLETED", "repeated", False)
    assert (again.accountId, again.amount) == (first.accountId, first.amount)
    assert await balance(client, f"{unique}-a") == OPENING - 100


@pytest.mark.parametrize(("account_suffix", "amount"), [("a", 101), ("b", 100)])
async def test_completed_pay_with_other_parameters_is_a_conflict(
    client: PaymentsClient, unique: str, account_suffix: str, amount: int
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    with pytest.raises(ServiceError) as refused:
        await client.make_payment(f"{unique}-p", f"{unique}-{account_suffix}", amount)
    assert refused.value.status == 409
    assert "different parameters" in refused.value.message
    assert (await client.get_status(f"{unique}-p")).amount == 100
    assert await balance(client, f"{unique}-a") == OPENING - 100
    assert await balance(client, f"{unique}-b") == OPENING


async def test_completed_cancel_refunds_once_before_answering(client: PaymentsClient, unique: str) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 300)
    refunded = await client.cancel_payment(f"{unique}-p")
    assert (refunded.state, refunded.outcome, refunded.moneyMoved) == ("CANCELLED", "refunded", True)
    assert await balance(client, f"{unique}-a") == OPENING
    again = await client.cancel_payment(f"{unique}-p")
    assert (again.outcome, again.moneyMoved) == ("cancelled", False)
    assert await balance(client, f"{unique}-a") == OPENING


@pytest.mark.parametrize("amount", [300, 301])
async def test_cancelled_pay_answers_cancelled_whatever_the_body(
    client: PaymentsClient, unique: str, amount: int
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 300)
    await client.cancel_payment(f"{unique}-p")
    answer = await client.make_payment(f"{unique}-p", f"{unique}-a", amount)
    assert (answer.state, answer.outcome, answer.moneyMoved) == ("CANCELLED", "cancelled", False)
    assert await balance(client, f"{unique}-a") == OPENING


async def test_expiry_is_armed_once_per_lifecycle(client: PaymentsClient, admin: Admin, unique: str) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    await client.cancel_payment(f"{unique}-p")
    await client.cancel_payment(f"{unique}-p")
    await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    timers = await admin.query(
        "SELECT count(*) AS n FROM sys_invocation WHERE target_service_name = 'payments'"
        f" AND target_service_key = '{unique}-p' AND target_handler_name = 'expireToken'"
    )
    assert timers == [{"n": 1}]


async def test_a_balance_of_zero_is_a_balance(client: PaymentsClient, unique: str) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", OPENING)
    assert await balance(client, f"{unique}-a") == 0
    declined = await client.make_payment(f"{unique}-q", f"{unique}-a", 1)
    assert declined.outcome == "declined"
    assert (await client.deposit(f"{unique}-a", 5)).balance == 5
