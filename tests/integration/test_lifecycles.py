"""Once Restate forgets an idempotency key, a request under it is a new request, never an old answer.

Restate derives the invocation id of a request with an idempotency key from the key, so after the
key's retention the same key gives the same invocation id again. This module's stack forgets keys
after 2 s and expires payment ids after 2 s, so each test can wait out both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from payments.client import PaymentsClient
from payments.config import Settings
from payments.console.restate import literal
from payments.runtime.admin import Admin
from payments.runtime.reconcile import reconcile
from payments.service.answers import PaymentAnswer
from payments.tools.launcher import LaunchedStack
from tests.helpers import set_stored_payment, stored_payment, wait_until_new

pytestmark = pytest.mark.anyio
OPENING = Settings().opening_balance
RETENTION = "2s"
ANSWER_SECONDS = 15
"""How long a call may take here before the test calls it stuck: a handler that fails with an
unexpected exception is retried by Restate, and its call never answers."""


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    """A stack whose ids expire after 2 s, and whose Restate forgets idempotency keys after 2 s."""
    env = {"PAYMENTS_EXPIRY_SECONDS": "2", "RESTATE_WORKER__CLEANUP_INTERVAL": "1s"}
    with LaunchedStack(Path(tmp_path_factory.mktemp("lifecycles")), env=env) as launched:
        for service in ("payments", "accounts"):
            response = httpx.patch(
                f"{launched.settings.admin_url}/services/{service}",
                json={"idempotency_retention": RETENTION},
                timeout=10,
            )
            assert response.is_success, response.text
        yield launched


@pytest.fixture
async def http(forgetful: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=forgetful.settings.ingress_url, timeout=ANSWER_SECONDS) as client:
        yield client


@pytest.fixture
async def client(forgetful: LaunchedStack) -> AsyncIterator[PaymentsClient]:
    async with PaymentsClient(forgetful.settings.ingress_url, timeout=ANSWER_SECONDS) as payments_client:
        yield payments_client


async def forgotten(settings: Settings, object_key: str, key: str) -> None:
    """Wait until Restate no longer remembers idempotency key ``key`` on ``object_key``."""
    query = (
        "SELECT count(*) AS kept FROM sys_invocation"
        f" WHERE target_service_key = {literal(object_key)} AND idempotency_key = {literal(key)}"
    )
    async with Admin(settings.admin_url) as admin:
        for _ in range(300):
            if int((await admin.query(query))[0]["kept"]) == 0:
                return
            await asyncio.sleep(0.1)
    pytest.fail(f"Restate kept the idempotency key {key} of {object_key}")


async def call(http: httpx.AsyncClient, path: str, body: object = None, key: str | None = None) -> Any:
    """POST ``body`` to ``path`` with idempotency key ``key``: the answer's JSON, or fail."""
    headers = {} if key is None else {"idempotency-key": key}
    response = await http.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_id_paid_in_three_lifecycles_under_one_key_is_charged_in_each(
    forgetful: LaunchedStack, http: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    payment_id, account = f"{unique}-p", f"{unique}-a"
    answers = []
    for _ in range(3):
        body = {"accountId": account, "amount": 100}
        answers.append(await call(http, f"/payments/{payment_id}/makePayment", body, key=payment_id))
        await wait_until_new(client, payment_id)
        await forgotten(forgetful.settings, payment_id, payment_id)

    assert [(a["outcome"], a["moneyMoved"]) for a in answers] == [("completed", True)] * 3
    assert (await client.balance(account)).balance == OPENING - 300
    entries = (await client.statement(account)).entries
    debits = {entry.transferId for entry in entries if entry.kind == "payment"}
    assert len(debits) == 3, entries
    assert not [p for p in (await reconcile(forgetful.settings)).problems if p.subject == payment_id]


async def test_a_declined_payment_is_not_declined_again_once_its_key_is_forgotten(
    forgetful: LaunchedStack, http: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    payment_id, account = f"{unique}-p", f"{unique}-a"
    body = {"accountId": account, "amount": OPENING + 50}
    declined = await call(http, f"/payments/{payment_id}/makePayment", body, key="k")
    await client.deposit(account, 50)
    await forgotten(forgetful.settings, payment_id, "k")

    paid = await call(http, f"/payments/{payment_id}/makePayment", body, key="k")

    assert (declined["outcome"], paid["outcome"]) == ("declined", "completed")
    assert (await client.balance(account)).balance == 0


async def test_a_deposit_key_deposits_once_for_ever_and_a_repeat_says_so(
    forgetful: LaunchedStack, http: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    account = f"{unique}-a"
    first = await call(http, f"/accounts/{account}/deposit", 500, key="k1")
    await client.make_payment(f"{unique}-p", account, 100)
    await forgotten(forgetful.settings, account, "k1")

    again = await call(http, f"/accounts/{account}/deposit", 500, key="k1")
    await forgotten(forgetful.settings, account, "k1")
    other = await http.post(f"/accounts/{account}/deposit", json=700, headers={"idempotency-key": "k1"})

    assert first == {"accountId": account, "balance": OPENING + 500, "repeated": False}
    assert again == {"accountId": account, "balance": OPENING + 400, "repeated": True}
    assert other.status_code == 409, other.text
    assert "idempotency-key" in other.json()["message"]
    assert (await client.balance(account)).balance == OPENING + 400
    entries = (await client.statement(account)).entries
    assert [entry.amount for entry in entries if entry.kind == "deposit"] == [500]


@pytest.mark.parametrize(
    ("stored", "state"),
    [
        ({"state": "COMPLETED", "charge": None, "lifecycle": "l", "debit_id": None}, "COMPLETED"),
        ({"state": "NEW", "charge": {"account_id": "a", "amount": 5}, "lifecycle": None}, "NEW"),
    ],
    ids=["completed-without-charge", "new-with-charge"],
)
async def test_a_stored_state_no_call_leaves_is_answered_and_holds_no_key(
    forgetful: LaunchedStack, http: httpx.AsyncClient, unique: str, stored: dict[str, Any], state: str
) -> None:
    """getStatus says what is stored; a call that would act on it is refused, not retried for ever."""
    payment_id = f"{unique}-p"
    await set_stored_payment(forgetful.settings, payment_id, json.dumps(stored).encode())
    try:
        answer = PaymentAnswer.model_validate(await call(http, f"/payments/{payment_id}/getStatus"))
        cancel = await http.post(f"/payments/{payment_id}/cancelPayment")
    finally:
        await set_stored_payment(forgetful.settings, payment_id, None)

    assert answer.state == state
    assert "reconcile" in answer.reason
    assert cancel.status_code == 500, cancel.text
    assert "which no call leaves" in cancel.json()["message"]


async def test_an_unreadable_stored_state_is_an_error_that_holds_no_key(
    forgetful: LaunchedStack, http: httpx.AsyncClient, unique: str
) -> None:
    payment_id = f"{unique}-p"
    await set_stored_payment(forgetful.settings, payment_id, b'{"charge": null}')
    try:
        status = await http.post(f"/payments/{payment_id}/getStatus")
        pay = await http.post(f"/payments/{payment_id}/makePayment", json={"accountId": "a", "amount": 1})
    finally:
        await set_stored_payment(forgetful.settings, payment_id, None)

    for answer in (status, pay):
        assert answer.status_code == 500, answer.text
        assert "cannot be read" in answer.json()["message"]


async def test_a_data_error_of_the_ledger_ends_the_call_and_holds_no_key(
    forgetful: LaunchedStack, http: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    """A deposit that would push @deposits past bigint: PostgreSQL's 22003, which no retry mends."""
    account = f"{unique}-a"
    connection = await asyncpg.connect(forgetful.settings.admin_ledger_url)
    shift = "UPDATE ledger_accounts SET balance = balance + $1 WHERE id = '@deposits'"
    room = await connection.fetchval(
        "SELECT balance + 9223372036854775808 FROM ledger_accounts WHERE id = '@deposits'"
    )
    await connection.execute(shift, -room + 10)
    try:
        refused = [await http.post(f"/accounts/{account}/deposit", json=100) for _ in range(2)]
    finally:
        await connection.execute(shift, room - 10)
        await connection.close()

    for answer in refused:
        assert answer.status_code == 500, answer.text
        assert "NumericValueOutOfRange" in answer.json()["message"]
    assert (await client.deposit(account, 100)).balance == OPENING + 100, "the account was not held"


async def test_reconcile_flags_a_completed_id_holding_a_debit_of_an_earlier_lifecycle(
    forgetful: LaunchedStack, client: PaymentsClient, unique: str
) -> None:
    payment_id = f"{unique}-p"
    await client.make_payment(payment_id, f"{unique}-a", 100)
    async with Admin(forgetful.settings.admin_url) as admin:
        kept = await stored_payment(admin, payment_id)
    assert kept is not None
    planted = {**json.loads(kept), "lifecycle": "a-later-lifecycle"}
    await set_stored_payment(forgetful.settings, payment_id, json.dumps(planted).encode())
    try:
        result = await reconcile(forgetful.settings)
    finally:
        await set_stored_payment(forgetful.settings, payment_id, kept)

    assert ("debit-of-another-lifecycle", payment_id) in {(p.check, p.subject) for p in result.problems}
