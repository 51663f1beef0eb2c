"""expireToken cannot be reached from the ingress: only its own timer may end a lifecycle."""

from __future__ import annotations

import httpx
import pytest

from payments.client import PaymentsClient
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio


async def test_the_expiry_timer_is_not_reachable(
    stack: LaunchedStack, client: PaymentsClient, unique: str
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    balance_before = (await client.balance(f"{unique}-a")).balance
    path = f"/payments/{unique}-p/expireToken"
    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=30) as http:
        response = await http.post(path)
        sent_async = await http.post(path + "/send")
    assert response.status_code == 400, response.text
    assert "not public" in response.json()["message"]
    assert 400 <= sent_async.status_code < 500
    assert (await client.get_status(f"{unique}-p")).state == "COMPLETED"
    assert (await client.balance(f"{unique}-a")).balance == balance_before
