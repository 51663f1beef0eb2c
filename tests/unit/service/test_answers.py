"""The JSON shape of every payment answer."""

from __future__ import annotations

import json

import pytest

from payments.domain.state_machine import Charge, Outcome, Payment, State, Transition
from payments.service.answers import PaymentAnswer

CHARGE = Charge("abc", 100)
KEYS = ["paymentId", "state", "outcome", "moneyMoved", "accountId", "amount", "reason"]
MONEY_MOVING = {Outcome.COMPLETED, Outcome.REFUNDED}


def wire(answer: PaymentAnswer) -> dict[str, object]:
    document: dict[str, object] = json.loads(answer.model_dump_json())
    return document


@pytest.mark.parametrize(
    ("state", "outcome", "charge"),
    [
        (State.COMPLETED, Outcome.COMPLETED, CHARGE),
        (State.COMPLETED, Outcome.REPEATED, CHARGE),
        (State.COMPLETED, Outcome.CONFLICT, CHARGE),
        (State.NEW, Outcome.DECLINED, CHARGE),
        (State.CANCELLED, Outcome.REFUNDED, CHARGE),
        (State.CANCELLED, Outcome.CANCELLED, None),
        (State.NEW, Outcome.EXPIRED, None),
    ],
    ids=str,
)
def test_of_transition_shape(state: State, outcome: Outcome, charge: Charge | None) -> None:
    transition = Transition(
        Payment(state, charge if state is not State.NEW else None), outcome, "why", charge
    )

    answer = PaymentAnswer.of_transition("pay-1", transition)

    assert wire(answer) == {
        "paymentId": "pay-1",
        "state": state.value,
        "outcome": outcome.value,
        "moneyMoved": outcome in MONEY_MOVING,
        "accountId": charge.account_id if charge else None,
        "amount": charge.amount if charge else None,
        "reason": "why",
    }
    assert list(wire(answer)) == KEYS


@pytest.mark.parametrize(
    ("payment", "state"),
    [
        (Payment(), "NEW"),
        (Payment(State.COMPLETED, CHARGE), "COMPLETED"),
        (Payment(State.CANCELLED), "CANCELLED"),
        (Payment(State.CANCELLED, CHARGE), "CANCELLED"),
    ],
    ids=["new", "completed", "cancelled", "refunded"],
)
def test_of_status_shape(payment: Payment, state: str) -> None:
    document = wire(PaymentAnswer.of_status("pay-1", payment))

    assert list(document) == KEYS
    assert (document["paymentId"], document["state"], document["outcome"]) == ("pay-1", state, "status")
    assert document["moneyMoved"] is False
    charge = payment.charge
    assert (document["accountId"], document["amount"]) == (
        (charge.account_id, charge.amount) if charge else (None, None)
    )
    assert isinstance(document["reason"], str)
    assert document["reason"]


def test_status_reasons_tell_the_stored_states_apart() -> None:
    payments = [
        Payment(),
        Payment(State.COMPLETED, CHARGE),
        Payment(State.CANCELLED),
        Payment(State.CANCELLED, CHARGE),
    ]

    reasons = {PaymentAnswer.of_status("p", payment).reason for payment in payments}

    assert len(reasons) == len(payments)


def test_answer_round_trips_through_json() -> None:
    answer = PaymentAnswer.of_transition(
        "p", Transition(Payment(State.COMPLETED, CHARGE), Outcome.COMPLETED, "ok", CHARGE)
    )

    assert PaymentAnswer.model_validate_json(answer.model_dump_json()) == answer
