"""A client of the payment service, through Restate's ingress."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Final, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from payments.service.answers import BalanceAnswer, DepositAnswer, PaymentAnswer, StatementAnswer
from payments.service.validation import IDEMPOTENCY_HEADER, parse_id

REQUEST_TIMEOUT_SECONDS = 30.0
NOT_FOUND = 404
FIRST_PAUSE_SECONDS = 0.1
MOST_PAUSE_SECONDS = 2.0
"""The longest pause between two retries: a call waits at most this long after the stack is back."""
T = TypeVar("T")


class ServiceError(Exception):
    """The service refused a call (4xx), or failed (5xx); ``message`` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotRunningError(Exception):
    """Nothing answers at any of the ingress URLs."""


class PaymentsClient:
    """Calls the ``payments`` and ``accounts`` objects. Use it as an async context manager.

    Give it every node's ingress URL of a cluster: a call that cannot connect to one, or that one
    does not know the service for, goes to the next at once; after a connection broken mid-call the
    client uses the next URL from then on.

    Every id, and the idempotency key of a deposit, is checked with the service's own rule before
    anything is sent: one it would refuse raises :class:`payments.validation.InvalidInputError` (a
    ``ValueError``) naming the field, so that an id taken from a user can never reach another object
    or handler than the one asked for.
    """

    def __init__(self, ingress: str | Sequence[str], *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.ingress_urls = (ingress,) if isinstance(ingress, str) else tuple(ingress)
        if not self.ingress_urls:
            raise ValueError("a client needs at least one ingress URL")
        self._current = 0
        self._http = httpx.AsyncClient(timeout=timeout)

    @property
    def ingress_url(self) -> str:
        """The ingress URL the next call goes to."""
        return self.ingress_urls[self._current]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def make_payment(self, payment_id: str, account_id: str, amount: int) -> PaymentAnswer:
        """Charge ``amount`` cents to ``account_id``, once for ``payment_id``."""
        body = {"accountId": parse_id(account_id, "accountId"), "amount": amount}
        return PaymentAnswer.model_validate_json(
            await self._call(_path("payments", payment_id, "makePayment"), json=body)
        )

    async def cancel_payment(self, payment_id: str) -> PaymentAnswer:
        """Block the payment, or refund it if it happened."""
        return PaymentAnswer.model_validate_json(
            await self._call(_path("payments", payment_id, "cancelPayment"))
        )

    async def get_status(self, payment_id: str) -> PaymentAnswer:
        """The payment's state."""
        return PaymentAnswer.model_validate_json(await self._call(_path("payments", payment_id, "getStatus")))

    async def deposit(
        self, account_id: str, amount: int, *, idempotency_key: str | None = None
    ) -> DepositAnswer:
        """Add funds; pass ``idempotency_key`` to make retries of the same deposit safe.

        The ledger keeps a key for ever: the same key again deposits nothing more (``repeated``),
        and with another amount it is refused (409).
        """
        headers: dict[str, str] = {}
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = parse_id(idempotency_key, IDEMPOTENCY_HEADER)
        return DepositAnswer.model_validate_json(
            await self._call(_path("accounts", account_id, "deposit"), json=amount, headers=headers)
        )

    async def balance(self, account_id: str) -> BalanceAnswer:
        """The account's balance in cents."""
        return BalanceAnswer.model_validate_json(await self._call(_path("accounts", account_id, "balance")))

    async def statement(
        self, account_id: str, *, before: int | None = None, limit: int | None = None
    ) -> StatementAnswer:
        """A page of the account's entries, newest first; pass an answer's ``nextBefore`` for the next."""
        page = {name: value for name, value in (("before", before), ("limit", limit)) if value is not None}
        return StatementAnswer.model_validate_json(
            await self._call(_path("accounts", account_id, "statement"), json=page)
        )

    async def _call(self, path: str, *, json: object = None, headers: dict[str, str] | None = None) -> bytes:
        """Send one call; to the next ingress URL while one refuses it before anything ran.

        Each call tries every URL once, from the current one, whatever calls running beside it do.
        """
        unreachable: httpx.TransportError | None = None
        unknown: ServiceError | None = None
        first = self._current
        for step in range(len(self.ingress_urls)):
            index = (first + step) % len(self.ingress_urls)
            try:
                response = await self._http.post(self.ingress_urls[index] + path, json=json, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                # Nothing was sent, so the next node can take the very same call.
                unreachable = error
                self._move_past(index)
                continue
            except httpx.TransportError:
                # The node may have died with the call in it, and the call may have happened: sending
                # it again is the caller's choice (`until_answered`), but not to this node.
                self._move_past(index)
                raise
            if response.is_success:
                return response.content
            refused = ServiceError(response.status_code, _error_message(response))
            if response.status_code != NOT_FOUND:
                raise refused
            # Every path of this client exists, so a 404 comes from a node that does not know the
            # service (yet: a node that just restarted learns it from the others a moment later).
            # Restate refused the call before running anything, so another node can take it.
            unknown = refused
            self._move_past(index)
        if unknown is not None:
            raise unknown
        raise NotRunningError(f"nothing answers at {', '.join(self.ingress_urls)}") from unreachable

    def _move_past(self, index: int) -> None:
        """Send the next calls to the URL after ``index``, which just failed."""
        self._current = (index + 1) % len(self.ingress_urls)


_KEY_FIELDS: Final = {"payments": "paymentId", "accounts": "accountId"}


def _path(service: Literal["payments", "accounts"], key: str, handler: str) -> str:
    """The ingress path of ``handler`` on the object ``key``, which must be an id the service accepts.

    The id is percent-escaped as well (Restate decodes it back into the key), although the rule
    already keeps out what could harm: should it ever admit ``/``, ``?``, ``#`` or ``%``, they still
    could not change which object or handler is called. Dots are escaped too: the ids ``.`` and
    ``..`` are valid, and a URL library would otherwise resolve them as path segments.
    """
    escaped = quote(parse_id(key, _KEY_FIELDS[service]), safe="").replace(".", "%2E")
    return f"/{service}/{escaped}/{handler}"


def _error_message(response: httpx.Response) -> str:
    try:
        message = _RestateError.model_validate_json(response.content).message
    except pydantic.ValidationError:
        message = response.text
    return message


class _RestateError(pydantic.BaseModel):
    message: str


def rotated(urls: Sequence[str], start: int) -> tuple[str, ...]:
    """``urls`` beginning with the one at ``start`` (modulo their number), to spread clients over nodes."""
    start %= len(urls)
    return (*urls[start:], *urls[:start])


def is_retryable(error: BaseException) -> bool:
    """Whether sending the same call again is the right answer to ``error``.

    Connection failures and 5xx answers are; a 4xx is the service's verdict and is not, except a 404:
    every path of this client exists, and a restate-server that has just (re)started answers 404
    for a moment, until it knows the deployment, refusing the call before running anything.
    """
    if isinstance(error, ServiceError):
        return error.status >= 500 or error.status == NOT_FOUND
    return isinstance(error, NotRunningError | httpx.TransportError)


def pauses(
    first: float = FIRST_PAUSE_SECONDS, most: float = MOST_PAUSE_SECONDS, rng: random.Random | None = None
) -> Iterator[float]:
    """The pauses between retries: doubling from ``first`` up to ``most``, each between half and all of it.

    The random part keeps clients that failed together, when a node went down, from all coming back
    at the same moment.
    """
    rng = rng or random.Random()  # noqa: S311 - spreading retries, not secrets
    pause = first
    while True:
        yield rng.uniform(pause / 2, pause)
        pause = min(most, pause * 2)


async def until_answered(
    call: Callable[[], Awaitable[T]],
    *,
    deadline_seconds: float = 300.0,
    first_pause_seconds: float = FIRST_PAUSE_SECONDS,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Send ``call`` again after every retryable failure, with growing :func:`pauses`, until it is answered.

    Safe for payments, whose id makes them idempotent, and for deposits sent with an idempotency key.
    """
    give_up = time.monotonic() + deadline_seconds
    waits = pauses(first_pause_seconds)
    while True:
        try:
            return await call()
        except (ServiceError, NotRunningError, httpx.TransportError) as error:
            if not is_retryable(error) or time.monotonic() > give_up:
                raise
            if on_retry is not None:
                on_retry(error)
        await asyncio.sleep(next(waits))
