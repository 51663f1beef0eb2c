"""The contract's state table, cell by cell, through ``advance`` and in-memory effects."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.domain.state_machine import (
    TRANSITIONS,
    Charge,
    Debit,
    Event,
    Outcome,
    Payment,
    State,
    Transition,
    advance,
    classify,
    classify_timer,
)


class FakeEffects:
    """Effects over a dict of balances, a tiny ledger of one payment id that records every call."""

    def __init__(self, balances: Mapping[str, int], earlier: tuple[Debit, ...] = ()) -> None:
        self.balances = dict(balances)
        self.debits = {debit.debit_id: debit for debit in earlier}
        """Every withdrawal of the id, ``earlier`` ones (from expired windows) included."""
        self.refunds: set[str] = set()
        self.attempts: list[Charge] = []
        self.withdrawn: list[Charge] = []
        self.refunded: list[Charge] = []
        self.armed = 0

    async def withdraw(self, charge: Charge) -> str | None:
        self.attempts.append(charge)
        balance = self.balances.get(charge.account_id, 0)
        if charge.amount > balance:
            return None
        self.balances[charge.account_id] = balance - charge.amount
        self.withdrawn.append(charge)
        debit_id = f"debit-{len(self.withdrawn)}"
        self.debits[debit_id] = Debit(charge, debit_id)
        return debit_id

    async def refund(self, debit: Debit) -> None:
        assert debit.debit_id not in self.refunds, "refunded twice"
        self.refunds.add(debit.debit_id)
        charge = debit.charge
        self.balances[charge.account_id] = self.balances.get(charge.account_id, 0) + charge.amount
        self.refunded.append(charge)

    async def find_earlier_charge(self) -> Debit | None:
        unrefunded = [debit for debit_id, debit in self.debits.items() if debit_id not in self.refunds]
        return unrefunded[-1] if unrefunded else None

    async def arm_expiry(self) -> str:
        self.armed += 1
        return f"lifecycle-{self.armed}"

    @property
    def net(self) -> int:
        """Cents taken from the accounts and not given back."""
        return sum(c.amount for c in self.withdrawn) - sum(c.amount for c in self.refunded)


CHARGE = Charge("abc", 100)
OTHER = Charge("xyz", 250)
RICH = {"abc": 1_000, "xyz": 1_000}
POOR = {"abc": 99, "xyz": 249}


@dataclass(frozen=True)
class Cell:
    payment: Payment
    event: Event
    request: Charge | None
    funds: Mapping[str, int]
    state: State
    outcome: Outcome
    stored: Charge | None
    withdrawn: tuple[Charge, ...] = ()
    refunded: tuple[Charge, ...] = ()
    attempts: int = 0
    armed: int = 0
    earlier: tuple[Debit, ...] = ()


NEW = Payment()
COMPLETED = Payment(State.COMPLETED, CHARGE, "earlier", "debit-0")
TOMBSTONE = Payment(State.CANCELLED, None, "earlier")
REFUNDED = Payment(State.CANCELLED, CHARGE, "earlier", "debit-0")
EXPIRED_CHARGE = Debit(OTHER, "debit-of-an-expired-window")
S, E, O = State, Event, Outcome  # noqa: E741 - short names keep the table one cell a line

CELLS = {
    # NEW: withdraw; COMPLETED and armed on success, NEW and declined without funds; PAY_OTHER alike.
    "new-pay": Cell(NEW, E.PAY, CHARGE, RICH, S.COMPLETED, O.COMPLETED, CHARGE, (CHARGE,), (), 1, 1),
    "new-pay-declined": Cell(NEW, E.PAY, CHARGE, POOR, S.NEW, O.DECLINED, None, (), (), 1, 0),
    "new-pay-other": Cell(NEW, E.PAY_OTHER, OTHER, RICH, S.COMPLETED, O.COMPLETED, OTHER, (OTHER,), (), 1, 1),
    "new-pay-other-declined": Cell(NEW, E.PAY_OTHER, OTHER, POOR, S.NEW, O.DECLINED, None, (), (), 1, 0),
    # A cancel of a NEW id refunds a charge that an expired window left unrefunded, or leaves a tombstone.
    "new-cancel": Cell(NEW, E.CANCEL, None, RICH, S.CANCELLED, O.CANCELLED, None, armed=1),
    "new-cancel-after-window": Cell(
        NEW, E.CANCEL, None, RICH, S.CANCELLED, O.REFUNDED, OTHER, (), (OTHER,), 0, 1, (EXPIRED_CHARGE,)
    ),
    "new-expire": Cell(NEW, E.EXPIRE, None, RICH, S.NEW, O.EXPIRED, None),
    # COMPLETED: repeat without charging, 409 on other parameters, refund once, expire to NEW.
    "completed-pay": Cell(COMPLETED, E.PAY, CHARGE, RICH, S.COMPLETED, O.REPEATED, CHARGE),
    "completed-pay-other": Cell(COMPLETED, E.PAY_OTHER, OTHER, RICH, S.COMPLETED, O.CONFLICT, CHARGE),
    "completed-cancel": Cell(
        COMPLETED, E.CANCEL, None, RICH, S.CANCELLED, O.REFUNDED, CHARGE, refunded=(CHARGE,)
    ),
    "completed-expire": Cell(COMPLETED, E.EXPIRE, None, RICH, S.NEW, O.EXPIRED, None),
    # CANCELLED, before any payment (a tombstone) or after a refund: nothing moves, expire to NEW.
    "tombstone-pay": Cell(TOMBSTONE, E.PAY, CHARGE, RICH, S.CANCELLED, O.CANCELLED, None),
    "tombstone-pay-other": Cell(TOMBSTONE, E.PAY_OTHER, OTHER, RICH, S.CANCELLED, O.CANCELLED, None),
    "tombstone-cancel": Cell(TOMBSTONE, E.CANCEL, None, RICH, S.CANCELLED, O.CANCELLED, None),
    "tombstone-expire": Cell(TOMBSTONE, E.EXPIRE, None, RICH, S.NEW, O.EXPIRED, None),
    "refunded-pay": Cell(REFUNDED, E.PAY, CHARGE, RICH, S.CANCELLED, O.CANCELLED, CHARGE),
    "refunded-pay-other": Cell(REFUNDED, E.PAY_OTHER, OTHER, RICH, S.CANCELLED, O.CANCELLED, CHARGE),
    "refunded-cancel": Cell(REFUNDED, E.CANCEL, None, RICH, S.CANCELLED, O.CANCELLED, CHARGE),
    "refunded-expire": Cell(REFUNDED, E.EXPIRE, None, RICH, S.NEW, O.EXPIRED, None),
    # A timer of another lifecycle, in any state: nothing changes.
    "new-stale-expire": Cell(NEW, E.STALE_EXPIRE, None, RICH, S.NEW, O.EXPIRED, None),
    "completed-stale-expire": Cell(COMPLETED, E.STALE_EXPIRE, None, RICH, S.COMPLETED, O.EXPIRED, CHARGE),
    "tombstone-stale-expire": Cell(TOMBSTONE, E.STALE_EXPIRE, None, RICH, S.CANCELLED, O.EXPIRED, None),
    "refunded-stale-expire": Cell(REFUNDED, E.STALE_EXPIRE, None, RICH, S.CANCELLED, O.EXPIRED, CHARGE),
}


def expected_lifecycle(cell: Cell) -> str | None:
    """A new lifecycle where the cell arms a timer, none in NEW, the payment's own otherwise."""
    if cell.armed:
        return "lifecycle-1"
    return None if cell.state is State.NEW else cell.payment.lifecycle


def expected_debit_id(cell: Cell) -> str | None:
    """The stored charge's withdrawal: a new one, a refunded one of an expired window, or the kept one."""
    if cell.state is State.NEW:
        return None
    if cell.withdrawn:
        return "debit-1"
    if cell.earlier and cell.refunded:
        return cell.earlier[-1].debit_id
    return cell.payment.debit_id


def expected_balances(cell: Cell) -> dict[str, int]:
    balances = Counter(cell.funds)
    balances.subtract(Counter({c.account_id: c.amount for c in cell.withdrawn}))
    balances.update(Counter({c.account_id: c.amount for c in cell.refunded}))
    return dict(balances)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS.keys())
def test_state_table_cell(cell: Cell) -> None:
    effects = FakeEffects(cell.funds, cell.earlier)

    transition = asyncio.run(advance(cell.payment, cell.event, effects, cell.request))

    stored = Payment(cell.state, cell.stored, expected_lifecycle(cell), expected_debit_id(cell))
    assert transition.payment == stored
    assert transition.outcome is cell.outcome
    assert transition.reason
    assert len(effects.attempts) == cell.attempts
    assert effects.withdrawn == list(cell.withdrawn)
    assert effects.refunded == list(cell.refunded)
    assert effects.armed == cell.armed
    assert effects.balances == expected_balances(cell)
    assert transition.outcome.money_moved == bool(cell.withdrawn or cell.refunded)


def test_conflict_answers_about_the_stored_charge_and_moves_no_money() -> None:
    effects = FakeEffects(RICH)

    transition = asyncio.run(advance(COMPLETED, Event.PAY_OTHER, effects, OTHER))

    assert (transition.outcome, transition.charge, transition.payment) == (
        Outcome.CONFLICT,
        CHARGE,
        COMPLETED,
    )
    assert (effects.attempts, effects.refunded, effects.balances) == ([], [], RICH)


def test_transitions_cover_every_pair_except_ledger_answers_outside_new() -> None:
    ledger_answers = {Event.WITHDRAWN, Event.DECLINED, Event.EARLIER_CHARGE, Event.NO_EARLIER_CHARGE}
    expected = {(s, e) for s in State for e in Event if s is State.NEW or e not in ledger_answers}

    assert set(TRANSITIONS) == expected


@pytest.mark.parametrize(
    ("payment", "charge", "event"),
    [
        (NEW, CHARGE, Event.PAY),
        (TOMBSTONE, CHARGE, Event.PAY),
        (COMPLETED, CHARGE, Event.PAY),
        (COMPLETED, Charge("abc", 101), Event.PAY_OTHER),
        (COMPLETED, Charge("abd", 100), Event.PAY_OTHER),
        (REFUNDED, OTHER, Event.PAY_OTHER),
    ],
    ids=["new", "tombstone", "same", "other-amount", "other-account", "refunded-other"],
)
def test_classify(payment: Payment, charge: Charge, event: Event) -> None:
    assert classify(payment, charge) is event


def test_expiry_is_armed_once_per_lifecycle() -> None:
    effects = FakeEffects(RICH)

    async def lifecycle() -> None:
        payment = NEW
        for event in (Event.PAY, Event.CANCEL, Event.EXPIRE, Event.PAY):
            payment = (await advance(payment, event, effects, CHARGE)).payment

    asyncio.run(lifecycle())

    assert effects.armed == 2  # the pay and the pay after expiry; not the cancel in between


@pytest.mark.parametrize(
    ("payment", "lifecycle", "event"),
    [
        (COMPLETED, "earlier", Event.EXPIRE),
        (REFUNDED, "earlier", Event.EXPIRE),
        (COMPLETED, "other", Event.STALE_EXPIRE),
        (COMPLETED, None, Event.STALE_EXPIRE),
        (NEW, "earlier", Event.STALE_EXPIRE),
        (Payment(State.COMPLETED, CHARGE), None, Event.EXPIRE),
    ],
    ids=["own", "own-cancelled", "other", "none-for-named", "new", "stored-before-lifecycles"],
)
def test_classify_timer(payment: Payment, lifecycle: str | None, event: Event) -> None:
    assert classify_timer(payment, lifecycle) is event


def test_a_timer_of_an_earlier_lifecycle_cannot_end_a_later_one() -> None:
    """The id's state is cleared by other means, then paid again: the first timer ends nothing."""
    effects = FakeEffects(RICH)

    async def lifecycles() -> tuple[Outcome, Outcome, State]:
        first = (await advance(NEW, Event.PAY, effects, CHARGE)).payment
        second = (await advance(NEW, Event.PAY, effects, CHARGE)).payment  # as if first's state were cleared
        after_first_timer = await advance(second, classify_timer(second, first.lifecycle), effects)
        retry = await advance(after_first_timer.payment, Event.PAY, effects, CHARGE)
        after_second_timer = await advance(
            retry.payment, classify_timer(retry.payment, second.lifecycle), effects
        )
        return after_first_timer.outcome, retry.outcome, after_second_timer.payment.state

    first_timer, retry, final = asyncio.run(lifecycles())

    assert (first_timer, retry, final) == (Outcome.EXPIRED, Outcome.REPEATED, State.NEW)
    assert len(effects.withdrawn) == 2  # one per lifecycle, not a third for the retry


def test_cancel_wins_after_the_window_and_refunds_once() -> None:
    """Paid, expired, then cancelled twice (the second after the cancel's own window): one refund."""
    effects = FakeEffects(RICH)

    async def lifecycles() -> list[Outcome]:
        outcomes, payment = [], NEW
        for event in (Event.PAY, Event.EXPIRE, Event.CANCEL, Event.EXPIRE, Event.CANCEL):
            transition = await advance(payment, event, effects, CHARGE)
            outcomes.append(transition.outcome)
            payment = transition.payment
        return outcomes

    outcomes = asyncio.run(lifecycles())

    assert outcomes == [O.COMPLETED, O.EXPIRED, O.REFUNDED, O.EXPIRED, O.CANCELLED]
    assert (effects.withdrawn, effects.refunded) == ([CHARGE], [CHARGE])


# -- any sequence of makePayment and cancelPayment on one payment id ------------------------------------

ACCOUNTS = ("abc", "xyz")
BODIES = st.builds(Charge, st.sampled_from(ACCOUNTS), st.sampled_from((100, 250)))
CANCEL = None
"""Stands for a cancelPayment in a generated sequence; a Charge stands for a makePayment with it."""


async def play(calls: list[Charge | None], effects: FakeEffects) -> tuple[Payment, Charge | None]:
    """Run the calls; return the final payment and the charge the id completed with, if any."""
    payment, completed_with = Payment(), None
    for call in calls:
        transition: Transition
        if call is CANCEL:
            transition = await advance(payment, Event.CANCEL, effects)
        else:
            transition = await advance(payment, classify(payment, call), effects, call)
        if transition.outcome is Outcome.COMPLETED:
            assert completed_with is None, "completed twice"
            completed_with = transition.charge
        assert effects.net in (0, completed_with.amount if completed_with else 0)
        payment = transition.payment
    return payment, completed_with


@given(
    calls=st.lists(st.one_of(st.none(), BODIES), max_size=12),
    funds=st.fixed_dictionaries({a: st.sampled_from((0, 99, 100, 250, 1_000)) for a in ACCOUNTS}),
)
def test_any_sequence_moves_the_charge_at_most_once_and_cancel_wins(
    calls: list[Charge | None], funds: dict[str, int]
) -> None:
    effects = FakeEffects(funds)

    payment, completed_with = asyncio.run(play(calls, effects))

    assert len(effects.withdrawn) <= 1
    if payment.state is State.COMPLETED:
        assert completed_with is not None
        assert effects.net == completed_with.amount
    else:
        assert effects.net == 0
    if CANCEL in calls:
        assert payment.state is State.CANCELLED
        assert effects.net == 0
    assert sum(effects.balances.values()) + effects.net == sum(funds.values())
    assert effects.armed == (0 if payment.state is State.NEW else 1)


@pytest.mark.parametrize(
    ("payment", "flaw"),
    [
        (Payment(), None),
        (Payment(State.COMPLETED, CHARGE, "l", "d"), None),
        (Payment(State.CANCELLED, None, "l", None), None),
        (Payment(State.CANCELLED, CHARGE, "l", "d"), None),
        (Payment(State.NEW, CHARGE), "NEW with a charge"),
        (Payment(State.COMPLETED, None, "l", None), "COMPLETED without a charge and its debit id"),
        (Payment(State.COMPLETED, CHARGE, "l", None), "COMPLETED without a charge and its debit id"),
        (Payment(State.CANCELLED, CHARGE, "l", None), "CANCELLED with a charge or a debit id but not both"),
    ],
)
def test_a_payment_no_call_leaves_has_a_flaw(payment: Payment, flaw: str | None) -> None:
    assert payment.flaw == flaw
