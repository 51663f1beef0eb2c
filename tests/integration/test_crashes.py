"""SIGKILL of the service or of restate-server in the middle of a burst: every payment once."""

from __future__ import annotations

import asyncio

import pytest

from payments.client import PaymentsClient, until_answered
from payments.config import Part, Settings
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
BURST = 200
ACCOUNTS = 10


@pytest.mark.parametrize("part", ["service", "restate-server"])
async def test_kill_in_the_middle_of_a_burst_charges_every_payment_exactly_once(
    stack: LaunchedStack, unique: str, part: Part
) -> None:
    amounts = {f"{unique}-p{i}": (f"{unique}-a{i % ACCOUNTS}", 1 + i) for i in range(BURST)}
    answered = 0
    quarter_answered = asyncio.Event()

    async def pay(client: PaymentsClient, payment_id: str) -> str:
        nonlocal answered
        account, amount = amounts[payment_id]
        # A client that loses its connection retries with the same id, as the contract asks.
        answer = await until_answered(lambda: client.make_payment(payment_id, account, amount))
        answered += 1
        if answered >= BURST // 4:
            quarter_answered.set()
        return answer.outcome

    async with PaymentsClient(stack.settings.ingress_url, timeout=120) as client:
        burst = asyncio.gather(*(pay(client, payment_id) for payment_id in amounts))
        await quarter_answered.wait()
        killed = stack.kill(part)
        outcomes = await burst
        assert stack.pid(part) != killed
        assert set(outcomes) <= {"completed", "repeated"}
        again = await asyncio.gather(
            *(client.make_payment(p, a, amount) for p, (a, amount) in amounts.items())
        )
        assert {answer.outcome for answer in again} == {"repeated"}
        for index in range(ACCOUNTS):
            account = f"{unique}-a{index}"
            charged = sum(amount for a, amount in amounts.values() if a == account)
            assert (await client.balance(account)).balance == OPENING - charged
