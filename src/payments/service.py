"""The Restate virtual objects ``payments`` and ``accounts``.

Handlers are thin: validate the input, load the state, let :mod:`payments.state_machine` decide,
store the result. One payment id is one virtual object key, and Restate runs the exclusive handlers
of a key one at a time, so there are no locks and no recovery code here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import restate
from restate.serde import BytesSerde

from payments import balances, state_machine
from payments.answers import BalanceAnswer, PaymentAnswer
from payments.config import Settings
from payments.state_machine import Charge, Event, Outcome, Payment, State
from payments.validation import (
    InvalidInputError,
    parse_amount,
    parse_id,
    parse_payment_request,
)

PAYMENT_KEY: Final = "payment"
BALANCE_KEY: Final = "balance"
AnyObjectContext = restate.ObjectContext | restate.ObjectSharedContext
_RAW: Final = BytesSerde()
"""Bodies reach the handlers as bytes so that :mod:`payments.validation` sees exactly what was sent."""

SETTINGS: Final = Settings.from_env()
"""Read once when the service starts, from the variables the stack passes to it."""

payments = restate.VirtualObject("payments")
accounts = restate.VirtualObject("accounts")


def bad_request(error: InvalidInputError) -> restate.TerminalError:
    """The 400 answer for input that breaks the rules."""
    return restate.TerminalError(str(error), status_code=400)


def checked_key(ctx: AnyObjectContext, field: str) -> str:
    """The object key, which Restate takes from the URL unchecked."""
    try:
        return parse_id(ctx.key(), field)
    except InvalidInputError as error:
        raise bad_request(error) from None


# -- payments --------------------------------------------------------------------------------------


class RestateLedger:
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

    def arm_expiry(self) -> None:
        """Send expireToken to this payment id after the expiry window."""
        self._ctx.object_send(expire_token, key=self._ctx.key(), arg=None, send_delay=self._expiry)


async def load_payment(ctx: AnyObjectContext) -> Payment:
    """The stored payment of this id; NEW when nothing is stored."""
    stored: dict[str, Any] | None = await ctx.get(PAYMENT_KEY)
    if stored is None:
        return Payment()
    charge = stored.get("charge")
    return Payment(State(stored["state"]), Charge(**charge) if charge else None)


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
        },
    )


async def apply(ctx: restate.ObjectContext, event: Event, charge: Charge | None = None) -> PaymentAnswer:
    """Run one event through the state machine and store the result."""
    payment = await load_payment(ctx)
    if charge is not None:
        event = state_machine.classify(payment, charge)
    step = await state_machine.run(payment, event, RestateLedger(ctx, SETTINGS), charge)
    if step.outcome is Outcome.CONFLICT:
        raise restate.TerminalError(step.reason, status_code=409)
    if step.payment != payment:
        store_payment(ctx, step.payment)
    return PaymentAnswer.of_step(ctx.key(), step)


@payments.handler("makePayment", input_serde=_RAW)
async def make_payment(ctx: restate.ObjectContext, body: bytes) -> PaymentAnswer:
    """Charge the account once per payment id."""
    checked_key(ctx, "paymentId")
    try:
        charge = parse_payment_request(body)
    except InvalidInputError as error:
        raise bad_request(error) from None
    return await apply(ctx, Event.PAY, charge)


@payments.handler("cancelPayment")
async def cancel_payment(ctx: restate.ObjectContext) -> PaymentAnswer:
    """Block the payment if it has not happened, refund it if it has."""
    checked_key(ctx, "paymentId")
    return await apply(ctx, Event.CANCEL)


@payments.handler("getStatus", kind="shared")
async def get_status(ctx: restate.ObjectSharedContext) -> PaymentAnswer:
    """The payment's state, read-only."""
    payment_id = checked_key(ctx, "paymentId")
    return PaymentAnswer.of_status(payment_id, await load_payment(ctx))


@payments.handler("expireToken", ingress_private=True)
async def expire_token(ctx: restate.ObjectContext) -> None:
    """Return the id to NEW when its expiry window is over."""
    await apply(ctx, Event.EXPIRE)


# -- accounts --------------------------------------------------------------------------------------


async def load_balance(ctx: AnyObjectContext) -> int:
    """The balance in cents; an account never written to has the opening balance."""
    stored: int | None = await ctx.get(BALANCE_KEY)
    return SETTINGS.opening_balance if stored is None else stored


def store_balance(ctx: restate.ObjectContext, balance: int) -> BalanceAnswer:
    """Store the balance and answer it."""
    ctx.set(BALANCE_KEY, balance)
    return BalanceAnswer(accountId=ctx.key(), balance=balance)


@accounts.handler("deposit", input_serde=_RAW)
async def deposit(ctx: restate.ObjectContext, body: bytes) -> BalanceAnswer:
    """Add funds. Not idempotent by itself: retrying clients send an idempotency-key header."""
    checked_key(ctx, "accountId")
    try:
        balance = balances.after_deposit(await load_balance(ctx), parse_amount(body))
    except InvalidInputError as error:
        raise bad_request(error) from None
    return store_balance(ctx, balance)


@accounts.handler("balance", kind="shared")
async def balance(ctx: restate.ObjectSharedContext) -> BalanceAnswer:
    """The current balance in cents, read-only."""
    account_id = checked_key(ctx, "accountId")
    return BalanceAnswer(accountId=account_id, balance=await load_balance(ctx))


@accounts.handler("withdraw", ingress_private=True)
async def withdraw(ctx: restate.ObjectContext, amount: int) -> bool:
    """Take cents from the balance unless that would overdraw it; changes nothing when declined."""
    balance = balances.after_withdrawal(await load_balance(ctx), amount)
    if balance is None:
        return False
    store_balance(ctx, balance)
    return True


@accounts.handler("refund", ingress_private=True)
async def refund(ctx: restate.ObjectContext, amount: int) -> BalanceAnswer:
    """Give back cents taken by a payment. Unlike deposit, never refused: the money was ours."""
    return store_balance(ctx, await load_balance(ctx) + amount)
