"""No request, whatever its bytes, leaves an invocation retrying while it holds its key.

A handler that ends with an exception instead of its answer or a TerminalError is retried by
Restate while every later call on its account or payment id waits. Each entry point gets hostile
input here: a 4xx comes back at once, the next valid call on the same key is answered, and
Restate's own table shows nothing of ours left running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from payments.runtime.admin import Admin
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}
ANSWER_SECONDS = 10.0
"""A generous bound: a refused call takes milliseconds, a stuck one never returns."""

DUPLICATE_SURROGATE = b'{"\\ud800": 1, "\\ud800": 2}'
HOSTILE_BODIES = [
    pytest.param(
        "makePayment", b'{"accountId": "ACCOUNT", "amount": ' + DUPLICATE_SURROGATE + b"}", id="nested"
    ),
    pytest.param("makePayment", DUPLICATE_SURROGATE, id="duplicate-key"),
    pytest.param("makePayment", b'{"accountId": "ACCOUNT", "amount": 1, "\\udfff": 1}', id="unknown-key"),
    pytest.param("makePayment", b'{"accountId": "\\ud800", "amount": 1}', id="value"),
    pytest.param(
        "makePayment",
        b'{"accountId": "ACCOUNT", "amount": 1, "\\u0000' + b"\\n" * 300 + b'": 1}',
        id="escapes",
    ),
    pytest.param("deposit", DUPLICATE_SURROGATE, id="deposit-duplicate-key"),
    pytest.param("deposit", b'"\\udc00"', id="deposit-value"),
    pytest.param("deposit", b'[{"\\ud83d": 1}]', id="deposit-nested"),
]
HOSTILE_IDS = [
    pytest.param("%ED%A0%80", id="surrogate-as-utf8"),
    pytest.param("%5Cud800", id="escape"),
    pytest.param("%FF", id="invalid-utf8"),
    pytest.param("a%5Cud83d%5Cude00%C3%A9", id="escapes-and-latin"),
]


@pytest.fixture
async def http(stack: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=ANSWER_SECONDS) as raw:
        yield raw


async def left_running(admin: Admin, keys: list[str] | None = None) -> list[dict[str, object]]:
    """Invocations of ours on ``keys`` (by default on any key) that have not completed, besides the
    expiry timers."""
    where = "target_service_name IN ('payments', 'accounts')"
    if keys is not None:
        where += (
            " AND target_service_key IN (" + ", ".join("'" + k.replace("'", "''") + "'" for k in keys) + ")"
        )
    return await admin.query(
        "SELECT id, target, status, retry_count FROM sys_invocation"
        f" WHERE {where} AND status <> 'completed' AND target_handler_name <> 'expireToken'"
    )


@pytest.mark.parametrize(("handler", "hostile"), HOSTILE_BODIES)
async def test_a_hostile_body_is_refused_and_the_key_still_answers(
    http: httpx.AsyncClient, admin: Admin, unique: str, handler: str, hostile: bytes
) -> None:
    account, payment_id = f"{unique}-a", f"{unique}-p"
    hostile = hostile.replace(b"ACCOUNT", account.encode())
    if handler == "makePayment":
        path, valid = f"/payments/{payment_id}/makePayment", f'{{"accountId": "{account}", "amount": 5}}'
    else:
        path, valid = f"/accounts/{account}/deposit", "5"

    refused = await http.post(path, content=hostile, headers=JSON)
    assert 400 <= refused.status_code < 500, refused.text
    answered = await http.post(path, content=valid.encode(), headers=JSON)
    assert answered.status_code == 200, answered.text
    assert await left_running(admin, [account, payment_id]) == []


@pytest.mark.parametrize("hostile_id", HOSTILE_IDS)
@pytest.mark.parametrize(
    "path", ["/payments/{}/cancelPayment", "/payments/{}/getStatus", "/accounts/{}/balance"]
)
async def test_a_hostile_id_is_refused_and_the_handler_still_answers(
    http: httpx.AsyncClient, admin: Admin, unique: str, path: str, hostile_id: str
) -> None:
    for _ in range(2):
        refused = await http.post(path.format(hostile_id))
        assert 400 <= refused.status_code < 500, refused.text
    # An exclusive handler on the very same key answers at once only if nothing holds that key.
    exclusive, body = (
        ("/payments/{}/makePayment", b"{}")
        if path.startswith("/payments")
        else ("/accounts/{}/deposit", b"5")
    )
    probe = await http.post(exclusive.format(hostile_id), content=body, headers=JSON)
    assert 400 <= probe.status_code < 500, probe.text
    answered = await http.post(path.format(unique))
    assert answered.status_code == 200, answered.text
    # Not by key: an id that is not valid UTF-8 has no key Restate could have stored as sent.
    assert await left_running(admin) == []


def test_the_services_pause_after_their_retries_whatever_the_server_default(tmp_path: Path) -> None:
    """The policy each service declares wins over restate-server's default (README, Stuck invocations)."""
    killing = {
        "RESTATE_DEFAULT_RETRY_POLICY__ON_MAX_ATTEMPTS": "kill",
        "RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "3",
    }
    with (
        LaunchedStack(tmp_path, env=killing) as stack,
        httpx.Client(base_url=stack.settings.admin_url, timeout=ANSWER_SECONDS) as admin_http,
    ):
        for service in ("payments", "accounts"):
            policy = admin_http.get(f"/services/{service}").json()["retry_policy"]
            assert (policy["on_max_attempts"], policy["max_attempts"]) == ("Pause", 70), policy
