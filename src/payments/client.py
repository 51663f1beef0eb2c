"""A client of the payment service, through Restate's ingress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import httpx
import pydantic

from payments.answers import BalanceAnswer, PaymentAnswer

REQUEST_TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


class ServiceError(Exception):
    """The service refused a call (4xx), or failed (5xx); ``message`` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotRunningError(Exception):
    """Nothing answers at the ingress URL."""


class PaymentsClient:
    """Calls the ``payments`` and ``accounts`` objects. Use it as an async context manager."""

    def __init__(self, ingress_url: str, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.ingress_url = ingress_url
        self._http = httpx.AsyncClient(base_url=ingress_url, timeout=timeout)

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
        body = {"accountId": account_id, "amount": amount}
        return PaymentAnswer.model_validate_json(
            await self._call(f"/payments/{payment_id}/makePayment", json=body)
        )

    async def cancel_payment(self, payment_id: str) -> PaymentAnswer:
        """Block the payment, or refund it if it happened."""
        return PaymentAnswer.model_validate_json(await self._call(f"/payments/{payment_id}/cancelPayment"))

    async def get_status(self, payment_id: str) -> PaymentAnswer:
        """The payment's state."""
        return PaymentAnswer.model_validate_json(await self._call(f"/payments/{payment_id}/getStatus"))

    async def deposit(
        self, account_id: str, amount: int, *, idempotency_key: str | None = None
    ) -> BalanceAnswer:
        """Add funds; pass ``idempotency_key`` to make retries of the same deposit safe."""
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        return BalanceAnswer.model_validate_json(
            await self._call(f"/accounts/{account_id}/deposit", json=amount, headers=headers)
        )

    async def balance(self, account_id: str) -> BalanceAnswer:
        """The account's balance in cents."""
        return BalanceAnswer.model_validate_json(await self._call(f"/accounts/{account_id}/balance"))

    async def _call(self, path: str, *, json: object = None, headers: dict[str, str] | None = None) -> bytes:
        try:
            response = await self._http.post(path, json=json, headers=headers)
        except httpx.ConnectError as error:
            raise NotRunningError(f"nothing answers at {self.ingress_url}") from error
        if response.is_success:
            return response.content
        raise ServiceError(response.status_code, _error_message(response))


def _error_message(response: httpx.Response) -> str:
    try:
        message = _RestateError.model_validate_json(response.content).message
    except pydantic.ValidationError:
        message = response.text
    return message


class _RestateError(pydantic.BaseModel):
    message: str


def is_retryable(error: BaseException) -> bool:
    """Whether sending the same call again is the right answer to ``error``.

    Connection failures and 5xx answers are; a 4xx is the service's verdict and is not.
    """
    if isinstance(error, ServiceError):
        return error.status >= 500
    return isinstance(error, NotRunningError | httpx.TransportError)


async def until_answered(
    call: Callable[[], Awaitable[T]],
    *,
    deadline_seconds: float = 300.0,
    pause_seconds: float = 0.2,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Send ``call`` again after every retryable failure, until it is answered.

    Safe for payments, whose id makes them idempotent, and for deposits sent with an idempotency key.
    """
    give_up = time.monotonic() + deadline_seconds
    while True:
        try:
            return await call()
        except (ServiceError, NotRunningError, httpx.TransportError) as error:
            if not is_retryable(error) or time.monotonic() > give_up:
                raise
            if on_retry is not None:
                on_retry(error)
        await asyncio.sleep(pause_seconds)
