"""The accounts' ledger through the ingress: statements, explicit opening, and cancel after the window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from payments.client import PaymentsClient, ServiceError
from payments.config import Settings
from payments.tools.launcher import LaunchedStack
from tests.helpers import payments_cli

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
JSON = {"content-type": "application/json"}


async def test_a_statement_lists_every_movement_newest_first(client: PaymentsClient, unique: str) -> None:
    account = f"{unique}-a"
    await client.make_payment(f"{unique}-p", account, 100)
    await client.cancel_payment(f"{unique}-p")
    await client.deposit(account, 7)

    page = await client.statement(account)

    assert [(e.kind, e.amount, e.balanceAfter) for e in page.entries] == [
        ("deposit", 7, OPENING + 7),
        ("refund", 100, OPENING),
        ("payment", -100, OPENING - 100),
        ("opening", OPENING, OPENING),
    ]
    assert [e.paymentId for e in page.entries] == [None, f"{unique}-p", f"{unique}-p", None]
    assert page.nextBefore is None


async def test_a_statement_comes_in_pages(client: PaymentsClient, unique: str) -> None:
    account = f"{unique}-a"
    for amount in (1, 2, 3):
        await client.deposit(account, amount)

    first = await client.statement(account, limit=3)
    second = await client.statement(account, before=first.nextBefore, limit=3)

    assert [e.amount for e in first.entries] == [3, 2, 1]
    assert [e.kind for e in second.entries] == ["opening"]
    assert second.nextBefore is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"limit": 0}', "limit"),
        (b'{"limit": 101}', "limit"),
        (b'{"limit": "10"}', "limit"),
        (b'{"before": 0}', "before"),
        (b'{"before": 1.5}', "before"),
        (b'{"page": 1}', "page"),
        (b"[1]", "body"),
        (b'{"limit": 1, "limit": 2}', "limit"),
    ],
    ids=[
        "limit-zero",
        "limit-too-large",
        "limit-string",
        "before-zero",
        "before-fraction",
        "unknown",
        "list",
        "twice",
    ],
)
async def test_a_bad_statement_request_is_a_400_naming_the_field(
    stack: LaunchedStack, client: PaymentsClient, unique: str, body: bytes, field: str
) -> None:
    await client.deposit(f"{unique}-a", 1)
    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=30) as http:
        response = await http.post(f"/accounts/{unique}-a/statement", content=body, headers=JSON)

    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"{field}: "), response.text


async def test_the_statement_of_an_account_nobody_opened_is_404(client: PaymentsClient, unique: str) -> None:
    with pytest.raises(ServiceError) as refused:
        await client.statement(f"{unique}-nobody")

    assert (refused.value.status, refused.value.message) == (404, "accountId: account not found")


def test_history_shows_every_entry_of_a_payment_id(stack: LaunchedStack, unique: str) -> None:
    async def pay_and_cancel() -> None:
        async with PaymentsClient(stack.settings.ingress_url) as client:
            await client.make_payment(f"{unique}-p", f"{unique}-a", 40)
            await client.cancel_payment(f"{unique}-p")

    asyncio.run(pay_and_cancel())
    shown = payments_cli("history", f"{unique}-p", settings=stack.settings)

    assert shown.returncode == 0, shown.stderr
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    sides = [
        (e["kind"], "@payments" if e["account_id"].startswith("@payments:") else e["account_id"], e["amount"])
        for e in entries
    ]
    # Oldest transfer first; the two sides of one transfer in either order.
    assert sorted(sides[:2]) == sorted([("payment", "@payments", 40), ("payment", f"{unique}-a", -40)])
    assert sorted(sides[2:]) == sorted([("refund", "@payments", -40), ("refund", f"{unique}-a", 40)])


@pytest.fixture(scope="module")
def closed_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    with LaunchedStack(tmp_path_factory.mktemp("closed"), env={"PAYMENTS_AUTO_OPEN": "false"}) as launched:
        yield launched


async def test_without_auto_open_an_account_is_opened_explicitly(
    closed_accounts: LaunchedStack, unique: str
) -> None:
    account = f"{unique}-a"
    async with PaymentsClient(closed_accounts.settings.ingress_url) as client:
        for call in (
            client.make_payment(f"{unique}-p", account, 5),
            client.balance(account),
            client.deposit(account, 5),
        ):
            with pytest.raises(ServiceError) as refused:
                await call
            assert (refused.value.status, refused.value.message) == (404, "accountId: account not found")

        async with httpx.AsyncClient(base_url=closed_accounts.settings.ingress_url) as http:
            public = await http.post(f"/accounts/{account}/open")
        assert public.status_code == 404, "open is no call of the public ingress"
        for _ in range(2):  # opening twice opens once
            opened = payments_cli("open", account, settings=closed_accounts.settings)
            assert (opened.returncode, json.loads(opened.stdout)) == (
                0,
                {"accountId": account, "balance": OPENING},
            )
        assert (await client.make_payment(f"{unique}-p", account, 5)).outcome == "completed"
        assert (await client.balance(account)).balance == OPENING - 5
