"""The client against a real ingress: every valid id reaches the object of that very key."""

from __future__ import annotations

import pytest

from payments.client import PaymentsClient
from payments.config import Settings

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance


async def test_dot_ids_reach_their_own_object(client: PaymentsClient, unique: str) -> None:
    """``.`` and ``..`` are valid ids, and must not be resolved away as path segments."""
    paid = await client.make_payment("..", f"{unique}-a", 10)

    assert (paid.paymentId, paid.outcome) == ("..", "completed")
    assert (await client.get_status("..")).accountId == f"{unique}-a"
    assert (await client.get_status(".")).state == "NEW"
    assert (await client.balance(f"{unique}-a")).balance == OPENING - 10
