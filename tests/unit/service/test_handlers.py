"""The guard around every handler, and the retry policy the services declare."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import restate
from restate.exceptions import SuspendedException
from restate.server_context import DisconnectedException

from payments.domain.balances import DepositRefusedError
from payments.service import ledger
from payments.service.handlers import RETRY_POLICY, accounts, guarded, journaled, payments

pytestmark = pytest.mark.anyio


class FakeContext:
    """Just enough of an object context for the guard: the key."""

    def __init__(self, key: str) -> None:
        self._key = key

    def key(self) -> str:
        return self._key


def failing(error: BaseException) -> Callable[[FakeContext], Awaitable[None]]:
    async def handler(ctx: FakeContext) -> None:
        raise error

    return guarded(handler, "payments/makePayment")


async def test_an_unexpected_exception_is_logged_at_error_level_and_raised_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = failing(KeyError("boom"))
    with pytest.raises(KeyError, match="boom"):
        await handler(FakeContext("p-1\ud800\n"))

    [record] = caplog.records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "payments/makePayment on key p-1\\ud800\\n failed with an unexpected KeyError" in message
    message.encode("utf-8")


@pytest.mark.parametrize(
    "error",
    [restate.TerminalError("refused", 400), DisconnectedException(), SuspendedException()],
    ids=["terminal", "disconnected", "suspended"],
)
async def test_the_sdk_control_flow_passes_through_without_a_word(
    caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    handler = failing(error)
    with pytest.raises(type(error)):
        await handler(FakeContext("p-1"))

    assert caplog.records == []


async def test_the_answer_passes_through() -> None:
    async def handler(ctx: FakeContext, amount: int) -> int:
        return amount * 2

    assert await guarded(handler, "accounts/deposit")(FakeContext("a"), 21) == 42


class BrokenContext(FakeContext):
    """A context whose state, request and durable steps all fail: an unexpected failure in any handler."""

    async def get(self, name: str) -> object:
        raise RuntimeError(f"broken context: state {name}")

    def request(self) -> object:
        raise RuntimeError("broken context: request")

    def run_typed(self, name: str, *_args: object) -> object:
        raise RuntimeError(f"broken context: step {name}")


INPUTS: dict[str, object] = {
    "makePayment": b'{"accountId": "a", "amount": 1}',
    "deposit": b"1",
    "statement": b"",
}


async def test_every_handler_is_guarded(caplog: pytest.LogCaptureFixture) -> None:
    for service in (payments, accounts):
        for name, handler in service.handlers.items():
            caplog.clear()
            arguments = [INPUTS.get(name, 1)] if handler.arity == 2 else []
            with pytest.raises(RuntimeError, match="broken context"):
                await handler.fn(BrokenContext("key-1"), *arguments)

            [record] = caplog.records
            assert record.levelno == logging.ERROR
            assert record.getMessage().startswith(f"{service.name}/{name} on key key-1 failed")


def test_both_services_pause_after_their_retries_instead_of_killing() -> None:
    assert payments.invocation_retry_policy is accounts.invocation_retry_policy is RETRY_POLICY
    assert RETRY_POLICY.on_max_attempts == "pause"


class StepRunningContext(FakeContext):
    """A context whose durable steps run their action at once, as Restate does the first time."""

    async def run_typed(
        self, _name: str, action: Callable[[], Awaitable[object]], *_options: object
    ) -> object:
        return await action()


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (ledger.AccountNotFoundError("account a not found"), 404),
        (DepositRefusedError("amount: the balance would exceed 9 cents"), 400),
        (ledger.TransferConflictError("transfer t exists with other parameters"), 500),
        (ledger.DebitNotFoundError("no posted payment debit d"), 500),
        (ledger.LedgerArgumentError("limit: must be an integer from 1 to 100"), 500),
    ],
    ids=["unknown-account", "deposit-refused", "conflict", "no-debit", "bad-argument"],
)
async def test_a_ledger_refusal_ends_the_call_instead_of_retrying(
    caplog: pytest.LogCaptureFixture, refusal: Exception, status: int
) -> None:
    async def refused() -> dict[str, object]:
        raise refusal

    with pytest.raises(restate.TerminalError) as ended:
        await journaled(StepRunningContext("p-1"), "withdraw", refused)  # type: ignore[arg-type]

    assert ended.value.status_code == status
    assert (status == 500) == any(record.levelno == logging.ERROR for record in caplog.records)


@pytest.mark.parametrize(
    "passing",
    [ConnectionRefusedError("the database is down"), ValueError("a driver's hiccup, not the ledger's")],
    ids=["outage", "driver"],
)
async def test_anything_but_a_ledger_refusal_is_left_to_restate_to_retry(passing: Exception) -> None:
    async def failing() -> dict[str, object]:
        raise passing

    with pytest.raises(type(passing)):
        await journaled(StepRunningContext("p-1"), "withdraw", failing)  # type: ignore[arg-type]
