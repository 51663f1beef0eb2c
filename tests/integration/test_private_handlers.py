"""expireToken, withdraw and refund cannot be reached from the ingress."""

from __future__ import annotations

import httpx
import pytest

from payments.client import PaymentsClient
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/payments/{unique}-p/expireToken", None),
        ("/accounts/{unique}-a/withdraw", b"500"),
        ("/accounts/{unique}-a/refund", b"500"),
    ],
    ids=["expireToken", "withdraw", "refund"],
)
async def test_internal_handler_is_not_reachable(
    stack: LaunchedStack, client: PaymentsClient, unique: str, path: str, content: bytes | None
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 100)
    balance_before = (await client.balance(f"{unique}-a")).balance
    headers = {"content-type": "application/json"} if content else {}
    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=30) as http:
        response = await http.post(path.format(unique=unique), content=content, headers=headers)
        sent_async = await http.post(path.format(unique=unique) + "/send", content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert "not public" in response.json()["message"]
    assert 400 <= sent_async.status_code < 500
    assert (await client.get_status(f"{unique}-p")).state == "COMPLETED"
    assert (await client.balance(f"{unique}-a")).balance == balance_before
