"""The Restate virtual objects ``payments`` and ``accounts``.

Handlers are thin: validate the input, load the state, let :mod:`payments.domain.state_machine`
decide, store the result. One payment id is one virtual object key, and Restate runs the exclusive
handlers of a key one at a time, so there are no locks and no recovery code here. The money moves in
the ledger (:mod:`payments.service.ledger`), each movement one ``ctx.run`` whose transfer id is the
same however often Restate retries it, so the ledger records it once.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Final, TypeVar, cast

import restate
from restate.serde import BytesSerde, JsonSerde
from restate.server_context import DisconnectedException

from payments.config import Settings
from payments.domain import state_machine
from payments.domain.balances import DepositRefusedError
from payments.domain.state_machine import Charge, Debit, Event, Outcome, Payment, State, debit_id_of
from payments.service import ledger
from payments.service.answers import (
    BalanceAnswer,
    DepositAnswer,
    PaymentAnswer,
    StatementAnswer,
    StatementEntry,
)
from payments.service.validation import (
    ID_MAX_LENGTH,
    IDEMPOTENCY_HEADER,
    InvalidInputError,
    parse_amount,
    parse_id,
    parse_payment_request,
    parse_statement_request,
    printable,
)

PAYMENT_KEY: Final = "payment"
MAX_MESSAGE_LENGTH: Final = 1000
AnyObjectContext = restate.ObjectContext | restate.ObjectSharedContext
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
Json = TypeVar("Json", dict[str, Any], dict[str, Any] | None)
"""What a ledger call's durable step journals: a record as a dict, or None for "nothing found"."""
_RAW: Final = BytesSerde()
"""Bodies reach the handlers as bytes so that :mod:`payments.validation` sees exactly what was sent."""
_LOG: Final = logging.getLogger(__name__)

SETTINGS: Final = Settings.from_env()
"""Read once when the service starts, from the variables the stack passes to it."""
OPENING: Final = SETTINGS.opening_balance if SETTINGS.auto_open else None
"""What an account nobody opened holds on first use; None: it must be opened first."""

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


class _Ledger:
    """The serving process's ledger, opened in its event loop before it serves (:func:`use_ledger`)."""

    current: ledger.Ledger | None = None


def use_ledger(opened: ledger.Ledger | None) -> None:
    """Make ``opened`` the ledger every handler of this process uses (None once it is closed)."""
    _Ledger.current = opened


def the_ledger() -> ledger.Ledger:
    """The process's ledger; a handler that runs before it is open fails, and Restate retries it."""
    if _Ledger.current is None:
        raise RuntimeError("the ledger is not open")
    return _Ledger.current


async def journaled(
    ctx: AnyObjectContext, name: str, action: Callable[[], Coroutine[Any, Any, Json]]
) -> Json:
    """Run one ledger call as a durable step, its refusals turned into answers.

    Restate runs the action again after a failure, including one after its commit (the service may
    die before the result is journaled): every write is idempotent by its transfer id, so the ledger
    answers the first result again. A refusal is final, so it becomes a TerminalError, which Restate
    journals and does not retry.
    """

    async def answered() -> Json:
        try:
            return await action()
        except ledger.AccountNotFoundError:
            raise rejection("accountId: account not found", 404) from None
        except DepositRefusedError as refused:
            raise bad_request(refused) from None
        except ledger.LedgerError as refused:
            # The ledger refusing what the service asks is a fault of ours (another database behind
            # PAYMENTS_DATABASE_URL, a bug), not a passing outage: retrying it would hold the key
            # for ever. The call fails, logged, and changed nothing.
            _LOG.error(
                "%s on key %s: the ledger refused: %s", name, printable(ctx.key(), ID_MAX_LENGTH), refused
            )
            raise rejection(f"the ledger refused this call: {refused}", 500) from None

    return await ctx.run_typed(name, answered, restate.RunOptions(serde=JsonSerde[Json]()))


def checked_key(ctx: AnyObjectContext, field: str) -> str:
    """The object key, which Restate takes from the URL unchecked."""
    try:
        return parse_id(ctx.key(), field)
    except InvalidInputError as error:
        raise bad_request(error) from None


# -- payments --------------------------------------------------------------------------------------


async def _random_id() -> str:
    return uuid.uuid4().hex


class RestateEffects:
    """Moves the money of one payment in the ledger, each movement one durable step."""

    def __init__(self, ctx: restate.ObjectContext, settings: Settings) -> None:
        self._ctx = ctx
        self._expiry = timedelta(seconds=settings.expiry_seconds)
        self._lifecycle: str | None = None

    async def _new_lifecycle(self) -> str:
        """The name of the lifecycle this call would begin: drawn at random once, and journaled.

        Not the invocation id: Restate gives a request with an idempotency key the invocation id
        of an earlier one once the key's retention has passed, and seeds ``ctx.uuid()`` from it, so
        both can name a lifecycle that is over, whose debit the ledger would answer again. A
        journaled draw is the same in every retry of this call and new in every other call.
        """
        if self._lifecycle is None:
            self._lifecycle = await self._ctx.run_typed("draw a lifecycle", _random_id)
        return self._lifecycle

    async def withdraw(self, charge: Charge) -> str | None:
        """Take the charge from its account: the withdrawal's transfer id, or None when declined."""
        transfer_id = debit_id_of(await self._new_lifecycle())
        payment_id = self._ctx.key()

        async def take() -> dict[str, Any]:
            taken = await the_ledger().withdraw(
                transfer_id, charge.account_id, charge.amount, payment_id, opening=OPENING
            )
            return taken.to_json()

        withdrawal = ledger.Withdrawal.from_json(await journaled(self._ctx, "withdraw", take))
        return transfer_id if withdrawal.posted else None

    async def refund(self, debit: Debit) -> None:
        """Give the charge back, once per withdrawal; returns once it is in the balance."""

        async def give_back() -> dict[str, Any]:
            return (await the_ledger().refund(f"refund:{debit.debit_id}", debit.debit_id)).to_json()

        await journaled(self._ctx, "refund", give_back)

    async def find_earlier_charge(self) -> Debit | None:
        """The id's last withdrawal that was never refunded: in NEW, one of an expired window."""
        payment_id = self._ctx.key()

        async def find() -> dict[str, Any] | None:
            found = await the_ledger().last_unrefunded_debit(payment_id)
            return None if found is None else found.to_json()

        found = await journaled(self._ctx, "find an earlier charge", find)
        if found is None:
            return None
        earlier = ledger.Debit.from_json(found)
        return Debit(Charge(earlier.account_id, earlier.amount), earlier.transfer_id)

    async def arm_expiry(self) -> str:
        """Send expireToken to this payment id after the expiry window, naming this lifecycle."""
        lifecycle = await self._new_lifecycle()
        self._ctx.object_send(expire_token, key=self._ctx.key(), arg=lifecycle, send_delay=self._expiry)
        return lifecycle


def stored_state_refused(why: str) -> restate.TerminalError:
    """The 500 for a stored payment this service never writes (an operator's edit, a bug)."""
    return rejection(
        f"paymentId: the state Restate stores for this id {why}; an operator must repair or clear it"
        " (README, Stuck invocations)",
        500,
    )


async def load_payment(ctx: AnyObjectContext) -> Payment:
    """The stored payment of this id; NEW when nothing is stored.

    A stored value this service never writes (an operator's edit, a bug) ends the call with an
    error that says so, rather than an exception that Restate would retry with the key held.
    """
    try:
        stored: dict[str, Any] | None = await ctx.get(PAYMENT_KEY)
        if stored is None:
            return Payment()
        charge = stored.get("charge")
        return Payment(
            State(stored["state"]),
            Charge(**charge) if charge else None,
            stored.get("lifecycle"),
            stored.get("debit_id"),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise stored_state_refused(f"cannot be read ({error!r})") from None


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
            "debit_id": payment.debit_id,
        },
    )


async def apply(
    ctx: restate.ObjectContext, event_for: Callable[[Payment], Event], charge: Charge | None = None
) -> PaymentAnswer:
    """Run one event through the state machine and store the result.

    ``event_for`` tells which event the call is, given the stored payment.
    """
    payment = await load_payment(ctx)
    if payment.flaw is not None:
        raise stored_state_refused(f"is {payment.flaw}, which no call leaves")
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


@handler(accounts, "deposit", input_serde=_RAW)
async def deposit(ctx: restate.ObjectContext, body: bytes) -> DepositAnswer:
    """Add funds: once per call, or once per idempotency key (Restate's header), for ever."""
    account_id = checked_key(ctx, "accountId")
    try:
        amount = parse_amount(body)
    except InvalidInputError as error:
        raise bad_request(error) from None
    # With an idempotency key, Restate derives the invocation id from the key, the account and the
    # handler, so this id names the key's deposit for ever, and the ledger keeps it (README, Deposits
    # and their keys). Without a key, every request has an invocation id of its own. (The key itself
    # never reaches the handler: Restate keeps it.)
    transfer_id = f"deposit:{ctx.request().id}"

    async def credit() -> dict[str, Any]:
        try:
            done = await the_ledger().deposit(transfer_id, account_id, amount, opening=OPENING)
        except ledger.TransferConflictError:
            raise rejection(
                f"{IDEMPOTENCY_HEADER}: this key was used for a deposit of another amount to {account_id};"
                " a new deposit needs a new key",
                409,
            ) from None
        return done.to_json()

    done = ledger.Deposit.from_json(await journaled(ctx, "deposit", credit))
    return DepositAnswer(accountId=done.account_id, balance=done.balance, repeated=done.repeated)


@handler(accounts, "balance", kind="shared")
async def balance(ctx: restate.ObjectSharedContext) -> BalanceAnswer:
    """The current balance in cents, read-only; an account nobody opened holds the opening balance."""
    account_id = checked_key(ctx, "accountId")

    async def read() -> dict[str, Any]:
        return (await the_ledger().balance(account_id, opening=OPENING)).to_json()

    found = ledger.Balance.from_json(await journaled(ctx, "balance", read))
    return BalanceAnswer(accountId=found.account_id, balance=found.balance)


@handler(accounts, "statement", kind="shared", input_serde=_RAW)
async def statement(ctx: restate.ObjectSharedContext, body: bytes) -> StatementAnswer:
    """A page of the account's entries, newest first; the answer's ``nextBefore`` asks for the next."""
    account_id = checked_key(ctx, "accountId")
    try:
        page = parse_statement_request(body)
    except InvalidInputError as error:
        raise bad_request(error) from None

    async def read() -> dict[str, Any]:
        found = await the_ledger().statement(account_id, before=page.before, limit=page.limit)
        return found.to_json()

    page_read = ledger.Statement.from_json(await journaled(ctx, "statement", read))
    return StatementAnswer(
        accountId=page_read.account_id,
        entries=[
            StatementEntry(
                entryId=entry.entry_id,
                transferId=entry.transfer_id,
                kind=entry.kind,
                amount=entry.amount,
                paymentId=entry.payment_id,
                createdAt=entry.created_at,
                balanceAfter=entry.balance_after,
            )
            for entry in page_read.entries
        ],
        nextBefore=page_read.next_before,
    )
