"""The console's formatting of amounts and times, how it groups a payment id's transfers, and whose
POSTs it takes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from payments.config import Settings
from payments.console import app as app_module
from payments.console.app import Console, Lifecycle, SameOrigin, _unavailable, lifecycles, run_reconcile
from payments.console.books import Books, PaymentTransfer
from payments.console.formats import moment, money
from payments.console.restate import RestateView
from payments.runtime.reconcile import Reconciliation

AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cents", "shown"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (100, "1.00"),
        (123_456, "1,234.56"),
        (100_000_000_00, "100,000,000.00"),
        (-5, "-0.05"),
        (-123_405, "-1,234.05"),
        (None, "—"),
    ],
)
def test_money_has_two_decimals_thousands_separators_and_a_sign(cents: int | None, shown: str) -> None:
    assert money(cents) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2024-05-01T12:34:56Z", "2024-05-01 12:34:56"),
        ("2024-05-01T12:34:56.987654321Z", "2024-05-01 12:34:56"),
        ("2024-05-01T14:34:56+02:00", "2024-05-01 12:34:56"),
        (datetime(2024, 5, 1, 12, 34, 56, 999_999, tzinfo=UTC), "2024-05-01 12:34:56"),
        (datetime(2024, 5, 1, 7, 34, 56, tzinfo=timezone(timedelta(hours=-5))), "2024-05-01 12:34:56"),
        (None, "—"),
    ],
    ids=str,
)
def test_moment_is_utc_to_the_second(value: datetime | str | None, shown: str) -> None:
    assert moment(value) == shown


def transfer(
    transfer_id: str,
    kind: str = "payment",
    *,
    status: str = "posted",
    refund_of: str | None = None,
    minute: int = 0,
) -> PaymentTransfer:
    return PaymentTransfer(transfer_id, kind, "acct", 500, status, refund_of, AT + timedelta(minutes=minute))


def test_a_debit_and_its_refund_make_one_lifecycle() -> None:
    debit, refund = transfer("p:1"), transfer("p:1:refund", "refund", refund_of="p:1", minute=1)

    assert lifecycles([debit, refund], "p:1") == [Lifecycle(debit, refund, current=True)]


def test_a_declined_debit_is_a_lifecycle_without_refund() -> None:
    declined = transfer("p:1", status="declined")

    assert lifecycles([declined], None) == [Lifecycle(declined, None, current=False)]


def test_each_debit_is_its_own_lifecycle_and_only_the_stored_one_is_current() -> None:
    first, refund = transfer("p:1"), transfer("p:1:refund", "refund", refund_of="p:1", minute=1)
    declined, second = transfer("p:2", status="declined", minute=2), transfer("p:3", minute=3)

    found = lifecycles([first, refund, declined, second], "p:3")

    assert found == [
        Lifecycle(first, refund, current=False),
        Lifecycle(declined, None, current=False),
        Lifecycle(second, None, current=True),
    ]


def test_no_transfers_no_lifecycles() -> None:
    assert lifecycles([], "p:1") == []


async def reached(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("reached")(scope, receive, send)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (b"http://127.0.0.1:9090", 200),
        (b"https://console.example.com", 200),
        (None, 403),
        (b"http://localhost:3000", 403),
        (b"null", 403),
        (b"https://console.example.com.evil.example", 403),
        (b"http://[", 403),
    ],
    ids=["same-address", "proxy", "no-origin", "other-port", "null", "proxy-name-as-prefix", "not-a-url"],
)
async def test_a_post_passes_from_the_consoles_own_address_or_its_proxys_name(
    origin: bytes | None, status: int
) -> None:
    headers = [(b"host", b"127.0.0.1:9090")] + ([(b"origin", origin)] if origin is not None else [])
    scope: Scope = {"type": "http", "method": "POST", "path": "/reconcile", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await SameOrigin(reached, proxies=("console.example.com",))(scope, receive, send)

    assert sent[0]["status"] == status


@pytest.mark.anyio
async def test_an_unavailable_page_keeps_the_drivers_words_in_the_log() -> None:
    """Host names, roles and socket paths are for the operator's log, not for every visitor."""

    async def broken(_: Request) -> Response:
        raise OSError("connection to /srv/secret/postgres-socket as payments_console refused")

    # The page links to these.
    routes = [
        Route("/", broken, name="overview"),
        Route("/search", reached, name="search"),
        Mount("/static", reached, name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={OSError: _unavailable})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        response = await client.get("/")

    assert response.status_code == 503
    assert "cannot be read right now" in response.text
    assert "secret" not in response.text
    assert "payments_console" not in response.text


@pytest.mark.anyio
async def test_reconciles_asked_for_during_a_run_take_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty clicks while a reconciliation runs cost that one run, not fifty."""
    runs = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_reconcile(*_: object) -> Reconciliation:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return Reconciliation(problems=(), accounts=0, transfers=0, payment_ids=0, in_flight=0)

    monkeypatch.setattr(app_module, "reconcile", slow_reconcile)
    app = Starlette(routes=[Route("/reconcile", run_reconcile, methods=["POST"])])
    app.state.console = Console(Settings(), cast("Books", None), cast("RestateView", None), asyncio.Event())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        clicks = [asyncio.create_task(client.post("/reconcile")) for _ in range(50)]
        await started.wait()
        lock = app.state.console.last_reconcile.running
        for _ in range(10_000):  # until the other 49 wait for the run
            if len(lock._waiters or ()) == 49:
                break
            await asyncio.sleep(0)
        release.set()
        answers = await asyncio.gather(*clicks)

    assert runs == 1
    assert {answer.status_code for answer in answers} == {303}
    assert app.state.console.last_reconcile.result is not None
