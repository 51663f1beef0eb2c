"""The JSON shapes the service answers with, shared by the service and its client."""

from __future__ import annotations

import pydantic
from pydantic import ConfigDict

from payments.domain.state_machine import Charge, Payment, State, Transition

_STATUS_REASONS = {
    (State.NEW, False): "no payment with this id, or it has expired",
    (State.COMPLETED, True): "payment completed",
    (State.CANCELLED, False): "cancelled before any payment",
    (State.CANCELLED, True): "cancelled; the payment was refunded",
}


class PaymentAnswer(pydantic.BaseModel):
    """What makePayment, cancelPayment and getStatus answer.

    ``outcome`` says what this call did (``status`` for getStatus), ``moneyMoved`` whether it moved
    money, and ``accountId`` and ``amount`` are the charge the answer is about, when there is one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    paymentId: str  # noqa: N815 - wire names follow the original API
    state: State
    outcome: str
    moneyMoved: bool  # noqa: N815
    accountId: str | None  # noqa: N815
    amount: int | None
    reason: str

    @classmethod
    def of_transition(cls, payment_id: str, transition: Transition) -> PaymentAnswer:
        """The answer to a call that went through the state machine."""
        return cls._of(
            payment_id,
            transition.payment.state,
            transition.outcome.value,
            money_moved=transition.outcome.money_moved,
            charge=transition.charge,
            reason=transition.reason,
        )

    @classmethod
    def of_status(cls, payment_id: str, payment: Payment) -> PaymentAnswer:
        """The answer of getStatus: the stored payment, with no money moved."""
        return cls._of(
            payment_id,
            payment.state,
            "status",
            money_moved=False,
            charge=payment.charge,
            reason=_STATUS_REASONS[(payment.state, payment.charge is not None)]
            if payment.flaw is None
            else f"Restate stores this id {payment.flaw}, which no call leaves: an operator should run"
            " payments reconcile and repair it",
        )

    @classmethod
    def _of(
        cls,
        payment_id: str,
        state: State,
        outcome: str,
        *,
        money_moved: bool,
        charge: Charge | None,
        reason: str,
    ) -> PaymentAnswer:
        return cls(
            paymentId=payment_id,
            state=state,
            outcome=outcome,
            moneyMoved=money_moved,
            accountId=charge.account_id if charge else None,
            amount=charge.amount if charge else None,
            reason=reason,
        )


class BalanceAnswer(pydantic.BaseModel):
    """What balance and open answer, and deposit too (:class:`DepositAnswer`): a balance in cents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accountId: str  # noqa: N815
    balance: int


class DepositAnswer(BalanceAnswer):
    """What deposit answers: the balance now, and whether this deposit was already in the ledger.

    ``repeated`` is true when the ledger already held the deposit of this idempotency key: nothing
    was credited by this call, and ``balance`` is the balance now, not the one right after the
    first. (While Restate keeps the key, its ingress answers the first call's answer instead.)
    """

    repeated: bool = False
    """False too in an answer made before this field existed, which Restate may still hold for its key."""


class StatementEntry(pydantic.BaseModel):
    """One entry of a statement: what one transfer did to the account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entryId: int  # noqa: N815
    transferId: str  # noqa: N815
    kind: str
    """``opening``, ``deposit``, ``payment`` or ``refund``."""
    amount: int
    """Signed cents: negative when the money left the account."""
    paymentId: str | None  # noqa: N815
    createdAt: str  # noqa: N815
    """ISO 8601, UTC."""
    balanceAfter: int  # noqa: N815


class StatementAnswer(pydantic.BaseModel):
    """What statement answers: a page of entries, newest first, and the cursor of the next page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accountId: str  # noqa: N815
    entries: list[StatementEntry]
    nextBefore: int | None  # noqa: N815
    """Send it as ``before`` for the next (older) page; null on the last page."""
