"""Every bad input of the contract: a 4xx naming the field, and no state changed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from payments.client import PaymentsClient
from payments.service.validation import ID_MAX_LENGTH, MAX_AMOUNT
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}


def body(account: object = "ACCOUNT", amount: object = 100) -> bytes:
    return json.dumps({"accountId": account, "amount": amount}).encode()


BAD_PAYMENT_BODIES = [
    pytest.param(b'{"accountId": "ACCOUNT"}', "amount", id="amount-missing"),
    pytest.param(body(amount="100"), "amount", id="amount-string"),
    pytest.param(b'{"accountId": "ACCOUNT", "amount": 1.5}', "amount", id="amount-fraction"),
    pytest.param(b'{"accountId": "ACCOUNT", "amount": 100.0}', "amount", id="amount-float"),
    pytest.param(b'{"accountId": "ACCOUNT", "amount": 1e2}', "amount", id="amount-exponent"),
    pytest.param(body(amount=True), "amount", id="amount-bool"),
    pytest.param(body(amount=None), "amount", id="amount-null"),
    pytest.param(body(amount="abc"), "amount", id="amount-text"),
    pytest.param(body(amount=0), "amount", id="amount-zero"),
    pytest.param(body(amount=-5), "amount", id="amount-negative"),
    pytest.param(body(amount=MAX_AMOUNT + 1), "amount", id="amount-too-large"),
    pytest.param(b'{"amount": 100}', "accountId", id="account-missing"),
    pytest.param(body(account=""), "accountId", id="account-empty"),
    pytest.param(body(account=17), "accountId", id="account-number"),
    pytest.param(body(account="a" * (ID_MAX_LENGTH + 1)), "accountId", id="account-too-long"),
    pytest.param(body(account="a b"), "accountId", id="account-space"),
    pytest.param(body(account="caf\u00e9"), "accountId", id="account-unicode"),
    pytest.param(body(account="a\u0007b"), "accountId", id="account-control"),
    pytest.param(b'{"accountId": "ACCOUNT", "amount": 1, "note": "x"}', "note", id="unknown-field"),
    pytest.param(b'{"accountId": "ACCOUNT", "amount": 1, "amount": 1000}', "amount", id="duplicate-field"),
    pytest.param(b"not json", "body", id="not-json"),
    pytest.param(b'{"accountId": "\xff", "amount": 1}', "body", id="not-utf8"),
    pytest.param(b"[1, 2]", "body", id="not-an-object"),
]

BAD_DEPOSIT_BODIES = [
    pytest.param(b'"100"', id="string"),
    pytest.param(b"1.5", id="fraction"),
    pytest.param(b"100.0", id="float"),
    pytest.param(b"1e2", id="exponent"),
    pytest.param(b"true", id="bool"),
    pytest.param(b"null", id="null"),
    pytest.param(b"0", id="zero"),
    pytest.param(b"-1", id="negative"),
    pytest.param(str(MAX_AMOUNT + 1).encode(), id="too-large"),
    pytest.param(b"not json", id="not-json"),
]

BAD_IDS = [
    pytest.param("a%20b", id="space"),
    pytest.param("caf%C3%A9", id="unicode"),
    pytest.param("a%07b", id="control"),
    pytest.param("a" * (ID_MAX_LENGTH + 1), id="too-long"),
    pytest.param("", id="empty"),
]


@pytest.fixture
async def http(stack: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=30) as raw:
        yield raw


async def snapshot(client: PaymentsClient, payment_id: str, account: str) -> tuple[object, ...]:
    status = await client.get_status(payment_id)
    return status.model_dump(), (await client.balance(account)).balance


def assert_rejected(response: httpx.Response, field: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["message"]
    assert message.startswith(f"{field}:") or f" {field}:" in message, message


@pytest.mark.parametrize(("raw_body", "field"), BAD_PAYMENT_BODIES)
async def test_bad_payment_body_is_rejected_and_changes_nothing(
    http: httpx.AsyncClient, client: PaymentsClient, unique: str, raw_body: bytes, field: str
) -> None:
    account, payment_id = f"{unique}-a", f"{unique}-p"
    raw_body = raw_body.replace(b"ACCOUNT", account.encode())
    await client.make_payment(f"{unique}-earlier", account, 10)
    before = await snapshot(client, payment_id, account)
    response = await http.post(f"/payments/{payment_id}/makePayment", content=raw_body, headers=JSON)
    assert_rejected(response, field)
    assert await snapshot(client, payment_id, account) == before


async def test_bad_body_after_completion_is_rejected_not_repeated(
    http: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 10)
    before = await snapshot(client, f"{unique}-p", f"{unique}-a")
    response = await http.post(f"/payments/{unique}-p/makePayment", content=b"{}", headers=JSON)
    assert_rejected(response, "accountId")
    assert await snapshot(client, f"{unique}-p", f"{unique}-a") == before


@pytest.mark.parametrize("raw_body", BAD_DEPOSIT_BODIES)
async def test_bad_deposit_is_rejected_and_changes_nothing(
    http: httpx.AsyncClient, client: PaymentsClient, unique: str, raw_body: bytes
) -> None:
    account = f"{unique}-a"
    before = (await client.balance(account)).balance
    response = await http.post(f"/accounts/{account}/deposit", content=raw_body, headers=JSON)
    assert_rejected(response, "amount" if raw_body != b"not json" else "body")
    assert (await client.balance(account)).balance == before


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/payments/{}/makePayment", body(account="fine")),
        ("/payments/{}/cancelPayment", None),
        ("/payments/{}/getStatus", None),
        ("/accounts/{}/deposit", b"5"),
        ("/accounts/{}/balance", None),
    ],
    ids=["makePayment", "cancelPayment", "getStatus", "deposit", "balance"],
)
async def test_bad_id_in_the_url_is_rejected(
    http: httpx.AsyncClient, client: PaymentsClient, bad_id: str, path: str, content: bytes | None
) -> None:
    headers = JSON if content is not None else {}
    before = (await client.balance("fine")).balance
    response = await http.post(path.format(bad_id), content=content, headers=headers)
    field = "paymentId" if path.startswith("/payments") else "accountId"
    assert_rejected(response, field)
    assert (await client.balance("fine")).balance == before


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({}, b'{"accountId": "abc", "amount": 1}'),
        ({"content-type": "text/plain"}, b'{"accountId": "abc", "amount": 1}'),
        (JSON, b""),
    ],
    ids=["no-content-type", "wrong-content-type", "empty-body"],
)
async def test_requests_the_ingress_refuses_are_4xx(
    http: httpx.AsyncClient, unique: str, headers: dict[str, str], content: bytes
) -> None:
    response = await http.post(f"/payments/{unique}-p/makePayment", content=content, headers=headers)
    assert 400 <= response.status_code < 500
    assert "message" in response.json()


async def test_unknown_handler_is_4xx(http: httpx.AsyncClient) -> None:
    response = await http.post("/payments/p/stealMoney")
    assert 400 <= response.status_code < 500
