"""The console's pages and its feed: a Starlette app over :class:`Books` and :class:`RestateView`.

Every page is rendered on the server (Jinja2, autoescaped); the one script adds the live feed and
refreshes the overview. Ids in URLs follow the contract's rule: a path id that breaks it is a 404
page that names the rule, a bad query parameter a 400 page; the input is only ever shown escaped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payments.config import Settings
from payments.console import chart, feed
from payments.console.books import Books, PaymentTransfer
from payments.console.formats import moment, money
from payments.console.restate import RestateView
from payments.runtime.admin import AdminError
from payments.runtime.reconcile import (
    READ_FAILURES,
    CannotReconcileError,
    Problem,
    Reconciliation,
    StoredPayment,
    reconcile,
)
from payments.service.validation import ID_MAX_LENGTH, MAX_ENTRY_ID, InvalidInputError, parse_id, printable

LOG = logging.getLogger("payments.console")
STATEMENT_PAGE: Final = 25
ACTIVITY_BUCKETS: Final = 60
ACTIVITY_SECONDS: Final = 10
"""The chart covers ten minutes in slices of ten seconds."""
ID_RULE: Final = f"An id is 1 to {ID_MAX_LENGTH} characters, each an ASCII letter, a digit or one of - _ . :"
SECURITY_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it a browser sends "Origin: null" with our own form's POST, and
    # SameOrigin refuses the reconcile button; same-origin still tells other sites nothing.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


@dataclass
class LastReconcile:
    """The result of the last reconciliation this console ran, and when."""

    result: Reconciliation | None = None
    error: str | None = None
    at: datetime | None = None
    seconds: float = 0.0
    running: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Console:
    """What the pages read from, and the console's own small state."""

    settings: Settings
    books: Books
    restate: RestateView
    stopping: asyncio.Event
    last_reconcile: LastReconcile = field(default_factory=LastReconcile)


def _templates() -> Jinja2Templates:
    folder = resources.files("payments.console") / "templates"
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["money"] = money
    environment.filters["moment"] = moment
    return Jinja2Templates(env=environment)


TEMPLATES: Final = _templates()


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def _path_id(request: Request, name: str, what: str) -> str:
    """The id in the path parameter ``name``, or a 404 page that says why no ``what`` has it."""
    raw = request.path_params[name]
    try:
        return parse_id(raw, name)
    except InvalidInputError:
        raise HTTPException(404, f"No {what} can have the id '{printable(raw)}'. {ID_RULE}") from None


async def overview(request: Request) -> Response:
    """Activity, counts, balances, invocations under way and the last reconciliation."""
    console = _console(request)
    totals = await console.books.totals()
    buckets = await console.books.activity(buckets=ACTIVITY_BUCKETS, seconds=ACTIVITY_SECONDS)
    invocations, statuses = await console.restate.unfinished()
    last_minute = buckets[-7:-1]  # the six newest whole slices: the newest one has only begun
    per_second = sum(b.payments + b.declined for b in last_minute) / (len(last_minute) * ACTIVITY_SECONDS)
    return _page(
        request,
        "overview.html",
        totals=totals,
        chart=chart.layout(buckets, seconds=ACTIVITY_SECONDS),
        series=chart.SERIES,
        per_second=per_second,
        minute={name: sum(getattr(b, name) for b in last_minute) for name, _ in chart.SERIES},
        states=await console.restate.state_counts(),
        invocations=invocations,
        statuses=statuses,
        reconciled=console.last_reconcile,
        bucket_seconds=ACTIVITY_SECONDS,
    )


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One debit of a payment id (posted or declined) and its refund, if any."""

    debit: PaymentTransfer
    refund: PaymentTransfer | None
    current: bool
    """Whether Restate's stored state names this debit."""


def lifecycles(transfers: list[PaymentTransfer], current_debit: str | None) -> list[Lifecycle]:
    """A payment id's debits, oldest first, each with its refund."""
    refunds = {transfer.refund_of: transfer for transfer in transfers if transfer.refund_of}
    return [
        Lifecycle(transfer, refunds.get(transfer.transfer_id), transfer.transfer_id == current_debit)
        for transfer in transfers
        if transfer.kind == "payment"
    ]


async def payment(request: Request) -> Response:
    """One payment id: its state, charges, entries and invocations."""
    payment_id = _path_id(request, "payment_id", "payment")
    console = _console(request)
    stored = await console.restate.stored_payment(payment_id)
    transfers = await console.books.transfers_of(payment_id)
    invocations = await console.restate.invocations_of(payment_id)
    if stored is None and not transfers and not invocations:
        raise HTTPException(
            404, f"No payment '{payment_id}': Restate holds nothing for it and the ledger no transfer."
        )
    unreadable = stored.detail if isinstance(stored, Problem) else None
    if not isinstance(stored, StoredPayment):
        stored = StoredPayment(payment_id, "UNREADABLE" if unreadable else "NEW", None, None, None)
    timers = [i for i in invocations if i.handler == "expireToken" and i.status == "scheduled"]
    return _page(
        request,
        "payment.html",
        payment_id=payment_id,
        stored=stored,
        unreadable=unreadable,
        lifecycles=lifecycles(transfers, stored.debit_id),
        entries=await console.books.ledger.history(payment_id),
        invocations=invocations,
        expiry=timers[0] if timers else None,
    )


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("before")
    if raw is None:
        return None
    # The length first: int() refuses more than 4300 digits with a ValueError, a 500.
    if (
        not raw.isascii()
        or not raw.isdigit()
        or len(raw) > len(str(MAX_ENTRY_ID))
        or not 1 <= int(raw) <= MAX_ENTRY_ID
    ):
        raise HTTPException(
            400, f"before: must be an entry id from 1 to {MAX_ENTRY_ID}, not '{printable(raw)}'"
        )
    return int(raw)


async def account(request: Request) -> Response:
    """One account: its balance and its statement, a page at a time."""
    account_id = _path_id(request, "account_id", "account")
    before = _cursor(request)
    console = _console(request)
    found = await console.books.account(account_id)
    if found is None:
        raise HTTPException(
            404, f"No account '{account_id}' in the ledger: nobody opened it or paid from it."
        )
    statement = await console.books.ledger.statement(account_id, before=before, limit=STATEMENT_PAGE)
    return _page(request, "account.html", account=found, statement=statement, before=before)


async def search(request: Request) -> Response:
    """Go to the payment or account with the id asked for."""
    raw = request.query_params.get("q", "").strip()
    if not raw:
        return RedirectResponse("/", status_code=303)
    try:
        wanted = parse_id(raw, "q")
    except InvalidInputError:
        raise HTTPException(400, f"Nothing can have the id '{printable(raw)}'. {ID_RULE}") from None
    console = _console(request)
    if await console.restate.stored_payment(wanted) is not None or await console.books.transfers_of(wanted):
        return RedirectResponse(request.url_for("payment", payment_id=wanted), status_code=303)
    if await console.books.account(wanted) is not None:
        return RedirectResponse(request.url_for("account", account_id=wanted), status_code=303)
    raise HTTPException(404, f"No payment and no account has the id '{wanted}'.")


async def run_reconcile(request: Request) -> Response:
    """Reconcile the ledger with Restate now, then show the overview.

    One run at a time, and a request that comes during a run takes that run's result rather than
    queueing one of its own: fifty clicks cost one reconciliation, not fifty.
    """
    console = _console(request)
    last = console.last_reconcile
    if last.running.locked():
        async with last.running:
            return RedirectResponse("/#reconcile", status_code=303)
    async with last.running:
        started = time.monotonic()
        try:
            last.result = await reconcile(console.settings, console.settings.console_ledger_url)
            last.error = None
        except CannotReconcileError as error:
            LOG.warning("reconcile: %s", error)  # the driver's words stay in the log, as on a 503 page
            last.result, last.error = (
                None,
                "the ledger or Restate could not be read; the console's log says why",
            )
        last.at = datetime.now(UTC)
        last.seconds = time.monotonic() - started
    return RedirectResponse("/#reconcile", status_code=303)


async def events(request: Request) -> Response:
    """Customer ledger entries as server-sent events, from the entry after ``Last-Event-ID``."""
    after = feed.resume_point(request.headers.get("last-event-id") or request.query_params.get("after"))
    console = _console(request)
    return StreamingResponse(
        feed.entry_events(console.books, after, console.stopping),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def health(_: Request) -> Response:
    """Answers once the console serves."""
    return PlainTextResponse("ok")


async def _error_page(request: Request, error: Exception) -> Response:
    status = error.status_code if isinstance(error, HTTPException) else 500
    detail = (
        error.detail
        if isinstance(error, HTTPException)
        else "Something went wrong; the console's log says what."
    )
    # Starlette's own text, for an address that no route takes.
    if status == 404 and detail == HTTPStatus(status).phrase:
        detail = (
            "The console has no page at this address: it has /, /payments/{id}, /accounts/{id} and /search."
        )
    titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 503: "Unavailable"}
    return _page(
        request,
        "error.html",
        status_code=status,
        status=status,
        title=titles.get(status, "Error"),
        detail=detail,
    )


async def _unavailable(request: Request, error: Exception) -> Response:
    LOG.warning("%s %s: cannot read: %s: %s", request.method, request.url.path, type(error).__name__, error)
    source = "Restate's admin API" if isinstance(error, AdminError | httpx.HTTPError) else "The ledger"
    return await _error_page(
        request,
        # The driver's words (hosts, roles, paths) stay in the log, which the operator reads.
        HTTPException(503, f"{source} cannot be read right now; the console's log says why."),
    )


async def _failed(request: Request, error: Exception) -> Response:
    LOG.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return await _error_page(request, error)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer: no inline script, no framing, no sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class SameOrigin:
    """Refuses a POST that the console's own page did not send: the reconcile button is ours alone.

    The Origin must be the address the request came to (its Host), or a host name of a proxy in
    front of the console (which may rewrite the Host). A POST without one (a script, curl) is
    refused too: browsers send it with every form's POST.
    """

    def __init__(self, app: ASGIApp, proxies: tuple[str, ...]) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 403 to a POST whose Origin is not this console; pass anything else on."""
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            origin = headers.get(b"origin")
            if origin is None or not self._ours(origin.decode("latin-1"), headers.get(b"host", b"")):
                refusal = "a POST needs the console's own Origin" if origin is None else "cross-site request"
                await PlainTextResponse(f"refused: {refusal}", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _ours(self, origin: str, host: bytes) -> bool:
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname
        except ValueError:  # not a URL (`http://[`): nobody's origin
            return False
        return parts.netloc.encode("latin-1") == host or hostname in self.proxies


def create_app(console: Console) -> Starlette:
    """The console's ASGI app, reading through ``console``."""
    static = StaticFiles(directory=str(resources.files("payments.console") / "static"))
    app = Starlette(
        routes=[
            Route("/", overview, name="overview"),
            # `path`: an id with a slash in it (sent as %2F) reaches the handler, whose 404 names the rule.
            Route("/payments/{payment_id:path}", payment, name="payment"),
            Route("/accounts/{account_id:path}", account, name="account"),
            Route("/search", search, name="search"),
            Route("/reconcile", run_reconcile, methods=["POST"], name="reconcile"),
            Route("/events", events, name="events"),
            Route("/health", health),
            Mount("/static", static, name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            # DNS rebinding: another site's page, under a name that resolves to 127.0.0.1, would
            # otherwise read every page as if it were ours.
            Middleware(TrustedHostMiddleware, allowed_hosts=list(console.settings.console_host_names)),
            Middleware(SameOrigin, proxies=console.settings.console_proxy_hosts),
        ],
        exception_handlers={
            HTTPException: _error_page,
            **dict.fromkeys(READ_FAILURES, _unavailable),  # a 503 page, not a 500
            Exception: _failed,
        },
    )
    app.state.console = console
    return app
