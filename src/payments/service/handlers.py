"""The Restate virtual objects ``payments`` and ``accounts``.

Handlers are thin: validate the input, load the state, let :mod:`payments.state_machine` decide,
store the result. One payment id is one virtual object key, and Restate runs the exclusive handlers
of a key one at a time, so there are no locks and no recovery code here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeVar, cast

import restate
from restate.serde import BytesSerde
from restate.server_context import DisconnectedException

from payments.config import Settings
from payments.domain import state_machine
from payments.domain.balances import Account, DepositRefusedError
from payments.domain.state_machine import Charge, Event, Outcome, Payment, State
from payments.service.answers import BalanceAnswer, PaymentAnswer
from payments.service.validation import (
    ID_MAX_LENGTH,
    InvalidInputError,
    parse_amount,
    parse_id,
    parse_payment_request,
    printable,
)

PAYMENT_KEY: Final = "payment"
BALANCE_KEY: Final = "balance"
REFUNDABLE_KEY: Final = "refundable"
MAX_MESSAGE_LENGTH: Final = 1000
AnyObjectContext = restate.ObjectContext | restate.ObjectSharedContext
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
_RAW: Final = BytesSerde()
"""Bodies reach the handlers as bytes so that :mod:`payments.validation` sees exactly what was sent."""
_LOG: Final = logging.getLogger(__name__)

SETTINGS: Final = Settings.from_env()
"""Read once when the service starts, from the variables the stack passes to it."""

RETRY_POLICY: Final = restate.InvocationRetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    exponentiation_factor=2.0,
    max_interval=timedelta(seconds=60),
    max_attempts=70,
    on_max_attempts="pause",
)
"""How Restate retries an invocation that failed with anything but an answer or a TerminalError.

Restate 1.7's defaults, set here so that no server configuration or upgrade changes them: about an
hour of retries, which a restart or a redeployment of the service outlasts, then pause. A paused
invocation keeps its key locked and its journal, and waits for an operator to resume or kill it;
"kill" would instead end it at once, after a withdrawal it had journaled may already have taken the
money, and let the next call on the key start over (README, "Stuck invocations").
"""

payments = restate.VirtualObject("payments", invocation_retry_policy=RETRY_POLICY)
accounts = restate.VirtualObject("accounts", invocation_retry_policy=RETRY_POLICY)


def handler(service: restate.VirtualObject, name: str, **options: Any) -> Callable[[Handler], Handler]:
    """Register a handler of ``service`` like ``service.handler(name, ...)``, behind :func:`guarded`."""
    register = service.handler(name, **options)
    return lambda function: register(guarded(function, f"{service.name}/{name}"))


def guarded(function: Handler, target: str) -> Handler:
    """``function``, logging at error level whenever it fails other than with a TerminalError.

    Restate retries such a failure while the invocation holds its key, so every later call on the
    key waits: the operator must hear of it at once. The exception goes on unchanged, so a transient
    failure stays retryable; the SDK's own control flow (suspension and cancellation, which are not
    ``Exception``s, and a lost connection to restate-server) passes through without a word.
    """

    @functools.wraps(function)
    async def logging_failures(ctx: AnyObjectContext, *args: Any) -> Any:
        try:
            return await function(ctx, *args)
        except (restate.TerminalError, DisconnectedException):
            raise
        except Exception as error:
            _LOG.exception(
                "%s on key %s failed with an unexpected %s: Restate retries it, and every call on"
                " this key waits until it succeeds or an operator ends it (README, Stuck invocations)",
                target,
                printable(ctx.key(), ID_MAX_LENGTH),
                type(error).__name__,
            )
            raise

    return cast(Handler, logging_failures)


def rejection(message: str, status_code: int) -> restate.TerminalError:
    """A TerminalError the SDK can always send.

    A message with a lone surrogate would make the SDK fail instead, and Restate retry the invocation
    for ever; one built from a large input is cut short.
    """
    encodable = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return restate.TerminalError(encodable[:MAX_MESSAGE_LENGTH], status_code=status_code)


def bad_request(error: InvalidInputError | DepositRefusedError) -> restate.TerminalError:
    """The 400 answer for input that breaks the rules."""
    return rejection(str(error), 400)


def checked_key(ctx: AnyObjectContext, field: str) -> str:
    """The object key, which Restate takes from the URL unchecked."""
    try:
        return parse_id(ctx.key(), field)
    except InvalidInputError as error:
        raise bad_request(error) from None


# -- payments --------------------------------------------------------------------------------------


class RestateEffects:
    """Moves the money of one payment through the ``accounts`` objects, durably."""

    def __init__(self, ctx: restate.ObjectContext, settings: Settings) -> None:
        self._ctx = ctx
        self._expiry = timedelta(seconds=settings.expiry_seconds)

    async def withdraw(self, charge: Charge) -> bool:
        """Take the charge from its account; False when the funds are insufficient."""
        return await self._ctx.object_call(withdraw, key=charge.account_id, arg=charge.amount)

    async def refund(self, charge: Charge) -> None:
        """Give the charge back, waiting until it is in the balance."""
        await self._ctx.object_call(refund, key=charge.account_id, arg=charge.amount)

    def arm_expiry(self) -> str:
        """Send expireToken to this payment id after the expiry window, naming this lifecycle.

        The lifecycle is named after the invocation that starts it: unique, and the same when
        Restate replays the invocation.
        """
        lifecycle = self._ctx.request().id
        self._ctx.object_send(expire_token, key=self._ctx.key(), arg=lifecycle, send_delay=self._expiry)
        return lifecycle


async def load_payment(ctx: AnyObjectContext) -> Payment:
    """The stored payment of this id; NEW when nothing is stored."""
    stored: dict[str, Any] | None = await ctx.get(PAYMENT_KEY)
    if stored is None:
        return Payment()
    charge = stored.get("charge")
    return Payment(State(stored["state"]), Charge(**charge) if charge else None, stored.get("lifecycle"))


def store_payment(ctx: restate.ObjectContext, payment: Payment) -> None:
    """Store the payment; a NEW payment is stored as no state at all."""
    if payment.state is State.NEW:
        ctx.clear_all()
        return
    charge = payment.charge
    ctx.set(
        PAYMENT_KEY,
        {
            "state": payment.state.value,
            "charge": {"account_id": charge.account_id, "amount": charge.amount} if charge else None,
            "lifecycle": payment.lifecycle,
        },
    )


async def apply(
    ctx: restate.ObjectContext, event_for: Callable[[Payment], Event], charge: Charge | None = None
) -> PaymentAnswer:
    """Run one event through the state machine and store the result.

    ``event_for`` tells which event the call is, given the stored payment.
    """
    payment = await load_payment(ctx)
    event = event_for(payment)
    transition = await state_machine.advance(payment, event, RestateEffects(ctx, SETTINGS), charge)
    if transition.outcome is Outcome.CONFLICT:
        raise rejection(transition.reason, 409)
    if transition.payment != payment:
        store_payment(ctx, transition.payment)
    return PaymentAnswer.of_transition(ctx.key(), transition)


@handler(payments, "makePayment", input_serde=_RAW)
async def make_payment(ctx: restate.ObjectContext, body: bytes) -> PaymentAnswer:
    """Charge the account once per payment id."""
    checked_key(ctx, "paymentId")
    try:
        charge = parse_payment_request(body)
    except InvalidInputError as error:
        raise bad_request(error) from None
    return await apply(ctx, lambda payment: state_machine.classify(payment, charge), charge)


@handler(payments, "cancelPayment")
async def cancel_payment(ctx: restate.ObjectContext) -> PaymentAnswer:
    """Block the payment if it has not happened, refund it if it has."""
    checked_key(ctx, "paymentId")
    return await apply(ctx, lambda _: Event.CANCEL)


@handler(payments, "getStatus", kind="shared")
async def get_status(ctx: restate.ObjectSharedContext) -> PaymentAnswer:
    """The payment's state, read-only."""
    payment_id = checked_key(ctx, "paymentId")
    return PaymentAnswer.of_status(payment_id, await load_payment(ctx))


@handler(payments, "expireToken", ingress_private=True)
async def expire_token(ctx: restate.ObjectContext, lifecycle: str | None) -> None:
    """Return the id to NEW when the expiry window of ``lifecycle`` is over, if it is still the id's."""
    await apply(ctx, lambda payment: state_machine.classify_timer(payment, lifecycle))


# -- accounts --------------------------------------------------------------------------------------


async def load_account(ctx: AnyObjectContext) -> Account:
    """The account's balance in cents; an account never written to has the opening balance."""
    stored: int | None = await ctx.get(BALANCE_KEY)
    refundable: int | None = await ctx.get(REFUNDABLE_KEY)
    return Account(SETTINGS.opening_balance if stored is None else stored, refundable or 0)


def store_account(ctx: restate.ObjectContext, before: Account, after: Account) -> BalanceAnswer:
    """Store what changed from ``before`` to ``after`` and answer the balance."""
    ctx.set(BALANCE_KEY, after.balance)
    if after.refundable != before.refundable:
        ctx.set(REFUNDABLE_KEY, after.refundable)
    return BalanceAnswer(accountId=ctx.key(), balance=after.balance)


@handler(accounts, "deposit", input_serde=_RAW)
async def deposit(ctx: restate.ObjectContext, body: bytes) -> BalanceAnswer:
    """Add funds. Not idempotent by itself: retrying clients send an idempotency-key header."""
    checked_key(ctx, "accountId")
    account = await load_account(ctx)
    try:
        after = account.after_deposit(parse_amount(body))
    except (InvalidInputError, DepositRefusedError) as error:
        raise bad_request(error) from None
    return store_account(ctx, account, after)


@handler(accounts, "balance", kind="shared")
async def balance(ctx: restate.ObjectSharedContext) -> BalanceAnswer:
    """The current balance in cents, read-only."""
    account_id = checked_key(ctx, "accountId")
    return BalanceAnswer(accountId=account_id, balance=(await load_account(ctx)).balance)


@handler(accounts, "withdraw", ingress_private=True)
async def withdraw(ctx: restate.ObjectContext, amount: int) -> bool:
    """Take cents from the balance unless that would overdraw it; changes nothing when declined."""
    account = await load_account(ctx)
    after = account.after_withdrawal(amount)
    if after is None:
        return False
    store_account(ctx, account, after)
    return True


@handler(accounts, "refund", ingress_private=True)
async def refund(ctx: restate.ObjectContext, amount: int) -> BalanceAnswer:
    """Give back cents taken by a payment. Unlike deposit, never refused: the money was ours."""
    account = await load_account(ctx)
    return store_account(ctx, account, account.after_refund(amount))
