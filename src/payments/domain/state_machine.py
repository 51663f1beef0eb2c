"""The rules of one payment id, as a table of states and events.

Everything a payment id can go through is in :data:`TRANSITIONS`. The Restate handlers only load the
stored :class:`Payment`, feed the event to :func:`advance`, and store what comes back; the money moves
through the :class:`Effects` that they provide. Nothing here knows about Restate or HTTP, so the rules
are unit-tested on their own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol


class State(enum.StrEnum):
    """Where a payment id stands. NEW is also what an id with no stored state is."""

    NEW = "NEW"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class Event(enum.StrEnum):
    """What can happen to a payment id."""

    PAY = "pay"
    """makePayment with the body already stored for the id, or for an id that stores none."""
    PAY_OTHER = "pay_other"
    """makePayment with a body that differs from the one the id completed with."""
    CANCEL = "cancel"
    WITHDRAWN = "withdrawn"
    """The withdrawal that a PAY asked for took the money."""
    DECLINED = "declined"
    """The withdrawal was refused: not enough funds."""
    EARLIER_CHARGE = "earlier_charge"
    """A cancel of a NEW id found a charge of an expired window of the id that was never refunded."""
    NO_EARLIER_CHARGE = "no_earlier_charge"
    """A cancel of a NEW id found no charge of the id left to refund."""
    EXPIRE = "expire"
    """The expiry timer of the id's current lifecycle has fired."""
    STALE_EXPIRE = "stale_expire"
    """The expiry timer of another lifecycle has fired: the id's state was cleared by other means (an
    operator's edit through Restate's admin API) and a newer lifecycle began before that timer fired."""


class Effect(enum.Enum):
    """What a transition asks the outside world to do, in order."""

    WITHDRAW = enum.auto()
    """Take the charge from its account; the answer is WITHDRAWN or DECLINED."""
    REFUND = enum.auto()
    """Give the charge back to its account, and wait until it is in the balance."""
    FIND_EARLIER_CHARGE = enum.auto()
    """Look for the id's last charge that is not refunded, from a window that has expired; the
    answer is EARLIER_CHARGE or NO_EARLIER_CHARGE."""
    ARM_EXPIRY = enum.auto()
    """Start the timer that returns the id to NEW after the expiry window."""


class Outcome(enum.StrEnum):
    """What one call did, as told to the client."""

    COMPLETED = "completed"
    REPEATED = "repeated"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    CONFLICT = "conflict"
    EXPIRED = "expired"

    @property
    def money_moved(self) -> bool:
        """Whether a call with this outcome moved money."""
        return self in (Outcome.COMPLETED, Outcome.REFUNDED)


@dataclass(frozen=True, slots=True)
class Charge:
    """The parameters of a makePayment: who pays, and how many cents."""

    account_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class Payment:
    """What is stored for one payment id.

    ``charge`` is the charge the id completed with. A CANCELLED payment keeps it when the cancel
    refunded it, so "was this refunded" is ``charge is not None`` and needs no flag of its own.
    ``debit_id`` is the ledger's id of the withdrawal that took the charge, which its refund names.
    ``lifecycle`` names the lifecycle, from the id's first state to its expiry, uniquely: no other
    lifecycle of any id has that name, whatever the requests carried. The expiry timer carries it, so
    that a timer of another lifecycle cannot end this one, and a lifecycle that began with a charge
    took it under the debit id :func:`debit_id_of` gives. None for NEW, and for state stored before
    lifecycles were named (whose timers carry none either).
    """

    state: State = State.NEW
    charge: Charge | None = None
    lifecycle: str | None = None
    debit_id: str | None = None

    @property
    def flaw(self) -> str | None:
        """What makes this a payment that no call leaves stored, or None when it is one they do.

        Such a state is an operator's edit or another version's: the table has no rule for it.
        """
        if self.state is State.NEW and (self.charge or self.debit_id):
            return "NEW with a charge"
        if self.state is State.COMPLETED and not (self.charge and self.debit_id):
            return "COMPLETED without a charge and its debit id"
        if self.state is State.CANCELLED and bool(self.charge) != bool(self.debit_id):
            return "CANCELLED with a charge or a debit id but not both"
        return None


def debit_id_of(lifecycle: str) -> str:
    """The ledger's id of the debit that began ``lifecycle``.

    New in every lifecycle and the same in every retry of the request that began it, so the ledger
    records that charge once and answers no other charge's result for it.
    """
    return f"payment:{lifecycle}"


@dataclass(frozen=True, slots=True)
class Debit:
    """A charge the ledger took, and the id of that withdrawal."""

    charge: Charge
    debit_id: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One cell of the table: the next state, the effects on the way there, and the answer."""

    next_state: State
    effects: tuple[Effect, ...]
    outcome: Outcome | None
    """None only where a follow-up event (the ledger's answer to WITHDRAW or FIND_EARLIER_CHARGE)
    gives the answer."""
    reason: str


S, E = State, Event
_STALE: Final = "a timer of another lifecycle; nothing changed"

TRANSITIONS: Final[Mapping[tuple[State, Event], Rule]] = {
    # -- NEW: nothing stored for the id (never seen, declined, or expired) --------------------------
    (S.NEW, E.PAY): Rule(S.NEW, (Effect.WITHDRAW,), None, "charging"),
    (S.NEW, E.PAY_OTHER): Rule(S.NEW, (Effect.WITHDRAW,), None, "charging"),
    (S.NEW, E.WITHDRAWN): Rule(S.COMPLETED, (Effect.ARM_EXPIRY,), Outcome.COMPLETED, "payment completed"),
    (S.NEW, E.DECLINED): Rule(S.NEW, (), Outcome.DECLINED, "insufficient funds; nothing was charged"),
    # Cancel wins after the window too: the ledger remembers the charges that expiry forgets.
    (S.NEW, E.CANCEL): Rule(S.NEW, (Effect.FIND_EARLIER_CHARGE,), None, "looking for a charge to refund"),
    (S.NEW, E.EARLIER_CHARGE): Rule(
        S.CANCELLED,
        (Effect.REFUND, Effect.ARM_EXPIRY),
        Outcome.REFUNDED,
        "cancelled after the id's window expired; its last payment was refunded",
    ),
    (S.NEW, E.NO_EARLIER_CHARGE): Rule(
        S.CANCELLED,
        (Effect.ARM_EXPIRY,),
        Outcome.CANCELLED,
        "cancelled before any payment; a later payment with this id will not be charged",
    ),
    (S.NEW, E.EXPIRE): Rule(S.NEW, (), Outcome.EXPIRED, "nothing to expire"),
    # -- COMPLETED: charged exactly once --------------------------------------------------------------
    (S.COMPLETED, E.PAY): Rule(S.COMPLETED, (), Outcome.REPEATED, "already completed; not charged again"),
    (S.COMPLETED, E.PAY_OTHER): Rule(
        S.COMPLETED,
        (),
        Outcome.CONFLICT,
        "payment id reused with different parameters (accountId or amount)",
    ),
    # The expiry timer armed at completion keeps running: a cancel does not start a new lifecycle.
    (S.COMPLETED, E.CANCEL): Rule(
        S.CANCELLED, (Effect.REFUND,), Outcome.REFUNDED, "cancelled; the payment was refunded"
    ),
    (S.COMPLETED, E.EXPIRE): Rule(S.NEW, (), Outcome.EXPIRED, "expired; the id is new again"),
    # -- CANCELLED: a tombstone that wins over every later payment ------------------------------------
    (S.CANCELLED, E.PAY): Rule(
        S.CANCELLED, (), Outcome.CANCELLED, "payment id was cancelled; nothing was charged"
    ),
    (S.CANCELLED, E.PAY_OTHER): Rule(
        S.CANCELLED, (), Outcome.CANCELLED, "payment id was cancelled; nothing was charged"
    ),
    (S.CANCELLED, E.CANCEL): Rule(S.CANCELLED, (), Outcome.CANCELLED, "already cancelled; nothing changed"),
    (S.CANCELLED, E.EXPIRE): Rule(S.NEW, (), Outcome.EXPIRED, "expired; the id is new again"),
    # -- any state: a timer of another lifecycle ends nothing ------------------------------------------
    (S.NEW, E.STALE_EXPIRE): Rule(S.NEW, (), Outcome.EXPIRED, _STALE),
    (S.COMPLETED, E.STALE_EXPIRE): Rule(S.COMPLETED, (), Outcome.EXPIRED, _STALE),
    (S.CANCELLED, E.STALE_EXPIRE): Rule(S.CANCELLED, (), Outcome.EXPIRED, _STALE),
}
"""Every (state, event) pair a payment id can meet. The ledger's answers (WITHDRAWN, DECLINED,
EARLIER_CHARGE, NO_EARLIER_CHARGE) only follow an effect that only NEW asks for, so they have no row
in the other states."""


class Effects(Protocol):
    """What carries out the table's effects, provided by the handlers: moving money, arming timers."""

    async def withdraw(self, charge: Charge) -> str | None:
        """Take the charge from its account: the withdrawal's id, or None when funds are insufficient.

        The id is :func:`debit_id_of` the lifecycle that a following :meth:`arm_expiry` names.
        """
        ...

    async def refund(self, debit: Debit) -> None:
        """Give the charge of ``debit`` back to its account; return once it is in the balance."""
        ...

    async def find_earlier_charge(self) -> Debit | None:
        """The id's last charge that was never refunded, taken in a window that has expired."""
        ...

    async def arm_expiry(self) -> str:
        """Schedule the EXPIRE event of this payment id after the expiry window.

        Returns the name of the lifecycle that the timer carries, unique to this lifecycle.
        """
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one event: the payment to store and what to tell the client."""

    payment: Payment
    outcome: Outcome
    reason: str
    charge: Charge | None
    """The charge this answer is about: the request's, or the one stored for the id."""


def classify(payment: Payment, charge: Charge) -> Event:
    """Tell a makePayment that repeats the stored charge from one that reuses the id."""
    if payment.charge is None or payment.charge == charge:
        return Event.PAY
    return Event.PAY_OTHER


def classify_timer(payment: Payment, lifecycle: str | None) -> Event:
    """Tell the timer of the payment's own lifecycle from one armed for another."""
    return Event.EXPIRE if lifecycle == payment.lifecycle else Event.STALE_EXPIRE


async def advance(
    payment: Payment,
    event: Event,
    effects: Effects,
    charge: Charge | None = None,
    debit_id: str | None = None,
) -> Transition:
    """Apply ``event`` to ``payment``, performing the effects of the table through ``effects``.

    ``charge`` is the request's for PAY events; other events act on the stored one, or on the one
    the ledger's answer is about (with ``debit_id``, the id of the withdrawal that took it).
    """
    charge = payment.charge or charge
    debit_id = payment.debit_id or debit_id
    lifecycle = payment.lifecycle
    rule = TRANSITIONS[(payment.state, event)]
    for effect in rule.effects:
        if effect is Effect.ARM_EXPIRY:
            lifecycle = await effects.arm_expiry()
        elif effect is Effect.FIND_EARLIER_CHARGE:
            earlier = await effects.find_earlier_charge()
            if earlier is None:
                return await advance(payment, Event.NO_EARLIER_CHARGE, effects)
            return await advance(payment, Event.EARLIER_CHARGE, effects, earlier.charge, earlier.debit_id)
        elif charge is None:  # pragma: no cover - the table moves money only where there is a charge
            raise AssertionError(f"{effect} needs a charge in state {payment.state}")
        elif effect is Effect.WITHDRAW:
            taken = await effects.withdraw(charge)
            follow_up = Event.DECLINED if taken is None else Event.WITHDRAWN
            return await advance(payment, follow_up, effects, charge, taken)
        elif debit_id is None:  # pragma: no cover - a charge that was taken has its withdrawal's id
            raise AssertionError(f"no withdrawal to refund in state {payment.state}")
        else:
            await effects.refund(Debit(charge, debit_id))
    if rule.outcome is None:  # pragma: no cover - only rows with a ledger effect have no outcome
        raise AssertionError(f"no outcome for {event} in state {payment.state}")
    if rule.next_state is State.NEW:
        return Transition(Payment(), rule.outcome, rule.reason, charge)
    took_money = rule.next_state is State.COMPLETED or Effect.REFUND in rule.effects
    kept = Payment(
        rule.next_state,
        charge if took_money else payment.charge,
        lifecycle,
        debit_id if took_money else payment.debit_id,
    )
    return Transition(kept, rule.outcome, rule.reason, charge)
