"""The operator console on a real stack, without a browser.

Its pages show what the API says, bad input gets a 4xx page that repeats it only escaped, its one
form refuses other sites, its role cannot write to the ledger, its live feed sends new entries, and
a stuck invocation shows on the overview with its key and error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg
import httpx
import pytest
from markupsafe import escape

from payments.client import PaymentsClient
from payments.console.app import ID_RULE
from payments.console.formats import money
from payments.domain.balances import MAX_BALANCE
from payments.service.validation import MAX_ENTRY_ID
from payments.tools.launcher import LaunchedStack
from tests.helpers import set_stored_payment

pytestmark = pytest.mark.anyio
ANSWER_SECONDS: Final = 10.0
FEED_SECONDS: Final = 5.0
"""A generous bound on a new entry reaching the feed, which polls the ledger four times a second."""
STUCK_SECONDS: Final = 30.0
"""A generous bound on a failing invocation showing on the overview, and on its next retry."""
POLL_SECONDS: Final = 0.2
PLANTED: Final = "planted by test_console: the ledger is down"


@pytest.fixture
async def console(stack: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.settings.console_url, timeout=ANSWER_SECONDS) as http:
        yield http


def assert_answered(response: httpx.Response, status: int) -> None:
    """``response`` has ``status`` and a page of ours: no traceback, not Starlette's plain text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html"), response.headers
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


def section(page: str, element_id: str) -> str:
    """The element of ``page`` with id ``element_id``, up to the end of its section."""
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</section>", start)]


# -- pages -----------------------------------------------------------------------------------------


async def test_a_cancelled_payment_shows_its_state_and_both_transfers(
    console: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    account, payment_id = f"{unique}-a", f"{unique}-p"
    await client.make_payment(payment_id, account, 1234)
    assert (await client.cancel_payment(payment_id)).state == "CANCELLED"
    transfers = {
        entry.kind: entry.transferId
        for entry in (await client.statement(account)).entries
        if entry.paymentId == payment_id
    }
    assert set(transfers) == {"payment", "refund"}

    page = await console.get(f"/payments/{payment_id}")

    assert_answered(page, 200)
    assert 'id="state">CANCELLED</span>' in page.text
    entries = section(page.text, "entries")
    for transfer_id in transfers.values():
        assert f"<code>{escape(transfer_id)}</code>" in entries
    assert f">{money(-1234)}<" in entries
    assert f">{money(1234)}<" in entries
    assert "refunded" in section(page.text, "lifecycles")


async def test_an_account_shows_the_apis_balance_and_pages_its_statement(
    console: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    account = f"{unique}-a"
    await client.make_payment(f"{unique}-p", account, 12_345)
    await client.deposit(account, 1_000_000)
    balance = (await client.balance(account)).balance
    newest, *older = (await client.statement(account)).entries
    assert money(balance).count(",") == 1

    page = await console.get(f"/accounts/{account}")

    assert_answered(page, 200)
    assert f'id="balance">{money(balance)}</dd>' in page.text
    assert f"<code>{newest.transferId}</code>" in section(page.text, "statement")
    second = await console.get(f"/accounts/{account}", params={"before": newest.entryId})
    assert_answered(second, 200)
    shown = section(second.text, "statement")
    assert f"<code>{newest.transferId}</code>" not in shown
    assert all(f"<code>{entry.transferId}</code>" in shown for entry in older)


async def test_search_goes_to_the_payment_or_the_account(
    console: httpx.AsyncClient, client: PaymentsClient, unique: str
) -> None:
    account, payment_id = f"{unique}-a", f"{unique}-p"
    await client.make_payment(payment_id, account, 5)

    to_payment = await console.get("/search", params={"q": f" {payment_id} "})
    to_account = await console.get("/search", params={"q": account})

    assert (to_payment.status_code, to_payment.next_request and to_payment.next_request.url.path) == (
        303,
        f"/payments/{payment_id}",
    )
    assert (to_account.status_code, to_account.next_request and to_account.next_request.url.path) == (
        303,
        f"/accounts/{account}",
    )


# -- bad input -------------------------------------------------------------------------------------

HOSTILE_IDS: Final = [
    pytest.param("%3Cscript%3Ealert(1)%3C%2Fscript%3E", "&lt;script&gt;", id="html"),
    pytest.param("a" * 129, "a" * 60, id="too-long"),
    pytest.param("caf%C3%A9", "caf", id="latin"),
    pytest.param("a%20b", "a b", id="space"),
    pytest.param("a%2Fb", "a/b", id="slash"),
    pytest.param("nul%00", "\\x00", id="nul"),
    # Not UTF-8: each byte that cannot be read is a replacement character, shown escaped.
    pytest.param("%FF", "&#39;\\ufffd&#39;", id="invalid-utf8"),
    pytest.param("%ED%A0%80", "&#39;\\ufffd\\ufffd\\ufffd&#39;", id="surrogate-as-utf8"),
]


@pytest.mark.parametrize("page", ["payments", "accounts"])
@pytest.mark.parametrize(("raw", "shown"), HOSTILE_IDS)
async def test_an_id_breaking_the_rule_is_a_404_page_that_names_the_rule(
    console: httpx.AsyncClient, page: str, raw: str, shown: str
) -> None:
    response = await console.get(f"/{page}/{raw}")

    assert_answered(response, 404)
    assert escape(ID_RULE) in response.text
    assert shown in response.text
    assert "<script>alert" not in response.text


@pytest.mark.parametrize("page", ["payments", "accounts"])
async def test_an_unknown_id_is_a_404_page(console: httpx.AsyncClient, unique: str, page: str) -> None:
    response = await console.get(f"/{page}/{unique}-nobody")

    assert_answered(response, 404)
    assert f"{unique}-nobody" in response.text


async def test_search_for_an_unknown_id_is_a_404_page(console: httpx.AsyncClient, unique: str) -> None:
    response = await console.get("/search", params={"q": f"{unique}-nobody"})

    assert_answered(response, 404)
    assert f"{unique}-nobody" in response.text


@pytest.mark.parametrize(
    "before",
    ["abc", "0", "-1", "1.5", "1e3", "\uff11", " 1", str(MAX_ENTRY_ID + 1), "9" * 5000, ""],
    ids=[
        "word",
        "zero",
        "negative",
        "fraction",
        "exponent",
        "fullwidth",
        "space",
        "too-large",
        "huge",
        "empty",
    ],
)
async def test_a_before_that_is_no_entry_id_is_a_400_page(
    console: httpx.AsyncClient, client: PaymentsClient, unique: str, before: str
) -> None:
    account = f"{unique}-a"
    await client.balance(account)

    response = await console.get(f"/accounts/{account}", params={"before": before})

    assert_answered(response, 400)
    assert "before: must be an entry id" in response.text


@pytest.mark.parametrize(
    ("query", "shown", "never"),
    [
        ('<img src=x onerror="alert(1)">', "&lt;img src=x onerror=", "<img"),
        ("<b>bold</b>", "&lt;b&gt;bold&lt;/b&gt;", "<b>bold"),
        ("' OR '1'='1", "&#39; OR &#39;1&#39;=&#39;1", "' OR '"),
        ("a" * 500, "a" * 64 + "...", "a" * 65),
    ],
    ids=["img", "bold", "quotes", "long"],
)
async def test_search_for_something_no_id_can_be_is_a_400_page_that_shows_it_escaped(
    console: httpx.AsyncClient, query: str, shown: str, never: str
) -> None:
    response = await console.get("/search", params={"q": query})

    assert_answered(response, 400)
    assert escape(ID_RULE) in response.text
    assert shown in response.text
    assert never not in response.text


# -- safety ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/", 200), ("/payments/%3Cx%3E", 404), ("/search?q=%3Cx%3E", 400), ("/nowhere", 404)],
)
async def test_every_page_carries_the_security_headers(
    console: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await console.get(path)

    assert_answered(response, status)
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] in ("no-referrer", "same-origin")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example"])
async def test_reconcile_from_another_site_is_refused(console: httpx.AsyncClient, origin: str) -> None:
    response = await console.post("/reconcile", headers={"origin": origin})

    assert response.status_code == 403, response.text
    assert "location" not in response.headers


async def test_reconcile_without_an_origin_is_refused(console: httpx.AsyncClient) -> None:
    response = await console.post("/reconcile")

    assert response.status_code == 403, response.text
    assert "Origin" in response.text


async def test_reconcile_from_the_console_itself_runs_and_the_overview_says_clean(
    console: httpx.AsyncClient, client: PaymentsClient, stack: LaunchedStack, unique: str
) -> None:
    await client.make_payment(f"{unique}-p", f"{unique}-a", 5)
    headers = {"origin": stack.settings.console_url}

    response = await console.post("/reconcile", headers=headers)

    assert (response.status_code, response.headers["location"]) == (303, "/#reconcile")
    overview = await console.get("/")
    assert_answered(overview, 200)
    assert '<p class="verdict ok">Clean</p>' in section(overview.text, "reconcile")


WRITES: Final = [
    pytest.param(
        "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, status)"
        " VALUES ('console-was-here', 'deposit', '@deposits', $1, 100, 'posted')",
        id="insert",
    ),
    pytest.param("UPDATE ledger_accounts SET balance = balance + 100 WHERE id = $1", id="update"),
    pytest.param("CREATE TABLE console_was_here (id int)", id="create-table"),
    pytest.param("SELECT ledger_deposit('console-was-here', $1, 100, 0, 1000000)", id="ledger-deposit"),
]


@pytest.mark.parametrize("statement", WRITES)
async def test_the_consoles_role_can_read_the_ledger_and_write_nothing(
    stack: LaunchedStack, client: PaymentsClient, unique: str, statement: str
) -> None:
    account = f"{unique}-a"
    await client.make_payment(f"{unique}-p", account, 5)
    balance = (await client.balance(account)).balance
    arguments = (account,) if "$1" in statement else ()
    connection = await asyncpg.connect(stack.settings.console_ledger_url)
    try:
        # A function it may not call is refused before the transaction's read-only default is met.
        with pytest.raises((asyncpg.ReadOnlySQLTransactionError, asyncpg.InsufficientPrivilegeError)):
            await connection.execute(statement, *arguments)
        # Read-only is only the role's default, which a session may lift: its rights refuse it too.
        await connection.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute(statement, *arguments)
        read = await connection.fetchval("SELECT balance FROM ledger_accounts WHERE id = $1", account)
    finally:
        await connection.close()

    assert read == balance == (await client.balance(account)).balance


# -- the live feed ---------------------------------------------------------------------------------


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """The events of a text/event-stream, each as its fields."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield fields
            fields = {}


async def entries_until(
    events: AsyncIterator[dict[str, str]], field: str, value: str
) -> list[dict[str, Any]]:
    """The feed's entries up to the next whose ``field`` is ``value``, which must come within seconds."""
    items: list[dict[str, Any]] = []
    resume_at = 0
    async with asyncio.timeout(FEED_SECONDS):
        async for event in events:
            items.append(json.loads(event["data"]))
            assert event["event"] == "entry"
            # The event's id is where a reconnection would resume: it never goes back.
            assert int(event["id"]) >= resume_at
            resume_at = int(event["id"])
            if items[-1][field] == value:
                return items
    pytest.fail("the feed ended")


async def newest_entry_id(stack: LaunchedStack) -> int:
    connection = await asyncpg.connect(stack.settings.console_ledger_url)
    try:
        newest: int = await connection.fetchval("SELECT coalesce(max(id), 0) FROM ledger_entries")
    finally:
        await connection.close()
    return newest


async def test_the_live_feed_sends_a_new_payments_entry(
    console: httpx.AsyncClient, client: PaymentsClient, stack: LaunchedStack, unique: str
) -> None:
    account, payment_id = f"{unique}-a", f"{unique}-p"
    last = await newest_entry_id(stack)

    async with console.stream("GET", "/events", params={"after": last}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = server_sent_events(response.aiter_lines())
        assert await anext(events) == {"retry": "1000"}
        await client.make_payment(payment_id, account, 250)
        *before, item = await entries_until(events, "payment", payment_id)

    assert all(entry["id"] > last for entry in [*before, item])
    assert (item["kind"], item["account"], item["amount"], item["negative"]) == (
        "payment",
        account,
        money(-250),
        True,
    )


# -- a stuck invocation ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def failing_deposits(stack: LaunchedStack, unique: str, account: str) -> AsyncIterator[None]:
    """Every deposit into ``account`` fails inside the ledger, like a passing outage, within the block."""
    name = f"test_console_fails_{unique}"  # unique is hex: a plain identifier
    connection = await asyncpg.connect(stack.settings.admin_ledger_url)
    try:
        await connection.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            # 57P03 (cannot connect now) is a failure that passes, so Restate retries the deposit.
            f" $$ BEGIN RAISE EXCEPTION '{PLANTED}' USING ERRCODE = '57P03'; END $$;"
            f" CREATE TRIGGER {name} BEFORE INSERT ON ledger_transfers FOR EACH ROW"
            f" WHEN (NEW.kind = 'deposit' AND NEW.credit_account = '{account}')"
            f" EXECUTE FUNCTION {name}()"
        )
        yield
    finally:
        await connection.execute(
            f"DROP TRIGGER IF EXISTS {name} ON ledger_transfers; DROP FUNCTION IF EXISTS {name}()"
        )
        await connection.close()


async def stuck_row(console: httpx.AsyncClient, key: str) -> str | None:
    """The overview's row of a stuck invocation on ``key``, if it shows one."""
    overview = await console.get("/")
    assert_answered(overview, 200)
    rows = re.findall(r'<tr class="stuck">(.*?)</tr>', section(overview.text, "invocations"), re.DOTALL)
    return next((row for row in rows if f"<code>{key}</code>" in row), None)


async def test_a_stuck_invocation_shows_on_the_overview_with_its_key_and_error(
    console: httpx.AsyncClient, client: PaymentsClient, stack: LaunchedStack, unique: str
) -> None:
    account = f"{unique}-a"
    opened = (await client.balance(account)).balance

    async with httpx.AsyncClient(base_url=stack.settings.ingress_url, timeout=STUCK_SECONDS) as ingress:
        async with failing_deposits(stack, unique, account):
            sent = await ingress.post(f"/accounts/{account}/deposit/send", json=500)
            assert sent.status_code == 202, sent.text
            for _ in range(int(STUCK_SECONDS / POLL_SECONDS)):
                if (row := await stuck_row(console, account)) is not None:
                    break
                await asyncio.sleep(POLL_SECONDS)
            else:
                pytest.fail(f"the overview showed no stuck invocation on {account}")
        # Once the ledger is back, the retry deposits, and nothing is left stuck for the tests after.
        answer = await ingress.get(f"/restate/invocation/{sent.json()['invocationId']}/attach")

    assert "accounts/deposit" in row
    assert "status-backing-off" in row
    assert PLANTED in row
    assert (answer.status_code, answer.json()["balance"]) == (200, opened + 500)
    assert await stuck_row(console, account) is None


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io"])
async def test_a_request_for_another_host_name_is_refused(console: httpx.AsyncClient, host: str) -> None:
    response = await console.get("/", headers={"host": host})

    assert response.status_code == 400
    assert "balance" not in response.text.lower()


async def test_localhost_is_one_of_the_consoles_names(stack: LaunchedStack) -> None:
    async with httpx.AsyncClient(timeout=10) as plain:
        response = await plain.get(f"http://localhost:{stack.settings.console_port}/")

    assert_answered(response, 200)


# -- what review fixes must keep fixed -------------------------------------------------------------


async def test_the_live_feed_sends_an_entry_that_commits_after_a_newer_one(
    console: httpx.AsyncClient, client: PaymentsClient, stack: LaunchedStack, unique: str
) -> None:
    """An entry's id is drawn at its insert: a deposit left open takes an id below a payment that
    commits first, and the feed, past that payment already, must still send the deposit's entry."""
    slow, fast = f"{unique}-slow", f"{unique}-fast"
    await client.deposit(slow, 1)  # opens it
    await client.deposit(fast, 1)
    last = await newest_entry_id(stack)
    owner = await asyncpg.connect(stack.settings.ledger_url)
    try:
        async with console.stream("GET", "/events", params={"after": last}) as response:
            events = server_sent_events(response.aiter_lines())
            assert await anext(events) == {"retry": "1000"}
            async with owner.transaction():
                # Until it commits it holds the row of @deposits: the newer transfer is a payment, not
                # a deposit, which would wait for it.
                await owner.execute(
                    "SELECT ledger_deposit($1, $2, $3, $4, $5)",
                    f"deposit:{unique}",
                    slow,
                    700,
                    0,
                    MAX_BALANCE,
                )
                await client.make_payment(f"{unique}-p", fast, 250)
                *_, newer = await entries_until(events, "account", fast)
            *_, older = await entries_until(events, "account", slow)
    finally:
        await owner.close()

    assert older["id"] < newer["id"]
    assert (older["kind"], older["amount"]) == ("deposit", money(700))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(
            json.dumps(
                {
                    "state": "COMPLETED",
                    "charge": {"account_id": "an-account", "amount": 300},
                    "lifecycle": "inv",
                }
            ).encode(),
            ['id="state">COMPLETED</span>', f"{money(300)} from"],
            id="without-debit-id",
        ),
        pytest.param(b"not json", ['id="state">UNREADABLE</span>', "not readable"], id="not-json"),
    ],
)
async def test_a_stored_payment_of_an_older_or_unknown_form_shows_a_page(
    console: httpx.AsyncClient, stack: LaunchedStack, unique: str, value: bytes, shown: list[str]
) -> None:
    """A state written before a key existed, or one that is not JSON at all, is a page, not a 500."""
    payment_id = f"{unique}-p"
    await set_stored_payment(stack.settings, payment_id, value)
    try:
        page = await console.get(f"/payments/{payment_id}")
    finally:
        # Reconciliation, which the tests after may run, would find it.
        await set_stored_payment(stack.settings, payment_id, None)

    assert_answered(page, 200)
    assert all(text in page.text for text in shown), page.text
