"""The chaos checker over hand-made histories: quiet on a correct one, loud on each kind of bug."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from payments.answers import BalanceAnswer, PaymentAnswer
from payments.invariants import CANCEL, DEPOSIT, PAY, Call, Request, Violation, check
from payments.state_machine import State

OPENING = 1_000


def pay(payment_id: str, amount: int = 100, account: str = "a") -> Request:
    return Request(PAY, payment_id, account, amount)


def cancel(payment_id: str) -> Request:
    return Request(CANCEL, payment_id)


def deposit(amount: int, key: str, account: str = "a") -> Request:
    return Request(DEPOSIT, account, amount=amount, idempotency_key=key)


def status(
    payment_id: str, state: State, outcome: str = "status", amount: int | None = None, *, moved: bool = False
) -> PaymentAnswer:
    return PaymentAnswer(
        paymentId=payment_id,
        state=state,
        outcome=outcome,
        moneyMoved=moved,
        accountId=None if amount is None else "a",
        amount=amount,
        reason="",
    )


def answered(
    request: Request,
    answer: PaymentAnswer | BalanceAnswer | None,
    *,
    sent: float = 0.0,
    at: float = 1.0,
    code: int = 200,
    error: str | None = None,
) -> Call:
    return Call(request, sent, at, 1, code, answer if code == 200 else None, error)


def unanswered(request: Request) -> Call:
    return Call(request, 0.0, None, 7, None, None, "ConnectError: refused")


def rules(
    calls: Sequence[Call], statuses: Mapping[str, PaymentAnswer], balance: int
) -> list[tuple[str, str | None]]:
    return [(v.rule, v.payment_id) for v in check(OPENING, calls, statuses, {"a": balance})]


def balance_violation(
    calls: Sequence[Call], statuses: Mapping[str, PaymentAnswer], balance: int
) -> Violation:
    [violation] = [v for v in check(OPENING, calls, statuses, {"a": balance}) if v.rule == "balance"]
    return violation


COMPLETED_THEN_REFUNDED = [
    answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
    answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100)),
    answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=2, at=3),
]
REFUNDED = {"p1": status("p1", State.CANCELLED, amount=100)}


def test_a_correct_history_has_no_violation() -> None:
    calls = [
        *COMPLETED_THEN_REFUNDED,
        answered(cancel("p2"), status("p2", State.CANCELLED, "cancelled")),
        answered(pay("p2", 40), status("p2", State.CANCELLED, "cancelled", 40), sent=2, at=3),
        answered(pay("p3", 30), status("p3", State.COMPLETED, "completed", 30, moved=True)),
        answered(pay("p3", 31), None, code=409, error="payment id reused"),
        answered(pay("p4", 5_000), status("p4", State.NEW, "declined", 5_000)),
        # Two copies of one deposit, sent at once with one key, deposit once.
        answered(deposit(50, "d1"), BalanceAnswer(accountId="a", balance=1_050)),
        answered(deposit(50, "d1"), BalanceAnswer(accountId="a", balance=1_050)),
    ]
    statuses = {
        **REFUNDED,
        "p2": status("p2", State.CANCELLED),
        "p3": status("p3", State.COMPLETED, amount=30),
        "p4": status("p4", State.NEW),
    }
    assert rules(calls, statuses, OPENING + 50 - 30) == []


def test_a_second_refund_is_money_no_call_explains() -> None:
    violation = balance_violation(COMPLETED_THEN_REFUNDED, REFUNDED, OPENING + 100)
    assert "off by +100" in violation.message
    assert "every refund" in violation.message
    assert violation.suspects == ("p1",)
    assert len(violation.calls) == 3
    assert "cancelPayment p1" in violation.describe()


def test_a_payment_answered_completed_twice_moved_money_twice() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
    ]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    assert rules(calls, statuses, OPENING - 200) == [("moved-twice", "p1"), ("balance", None)]


def test_a_withdrawal_the_answers_do_not_show_still_breaks_the_balance() -> None:
    calls = [answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True))]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    violation = balance_violation(calls, statuses, OPENING - 200)
    assert "less money" in violation.message
    assert violation.suspects == ("p1",)


def test_a_completion_a_client_saw_must_last() -> None:
    calls = [answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True))]
    assert rules(calls, {"p1": status("p1", State.NEW)}, OPENING) == [("lost-completion", "p1")]


def test_a_cancelled_payment_must_give_its_money_back() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=2, at=3),
    ]
    found = rules(calls, {"p1": status("p1", State.CANCELLED)}, OPENING - 100)
    assert found == [("kept-money", "p1"), ("balance", None)]


def test_a_payment_sent_after_an_answered_cancel_must_not_complete() -> None:
    calls = [
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1),
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=2, at=3),
    ]
    found = rules(calls, {"p1": status("p1", State.CANCELLED)}, OPENING)
    assert ("cancel-lost-race", "p1") in found
    assert ("kept-money", "p1") in found


def test_a_payment_sent_while_the_cancel_was_in_flight_may_complete_first() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0, at=2),
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=1, at=3),
    ]
    assert rules(calls, REFUNDED, OPENING) == []


def test_a_cancel_nobody_sent_is_reported() -> None:
    calls = [answered(pay("p1"), status("p1", State.NEW, "declined", 100))]
    assert rules(calls, {"p1": status("p1", State.CANCELLED)}, OPENING) == [("phantom-cancel", "p1")]


def test_a_conflict_is_only_right_for_another_body() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(pay("p1"), None, code=409, error="payment id reused"),
    ]
    found = rules(calls, {"p1": status("p1", State.COMPLETED, amount=100)}, OPENING - 100)
    assert found == [("refused", "p1")]


def test_a_call_that_never_got_an_answer_is_reported() -> None:
    calls = [unanswered(pay("p1"))]
    assert rules(calls, {"p1": status("p1", State.NEW)}, OPENING) == [("unanswered", "p1")]


def test_an_acknowledged_deposit_must_not_be_lost() -> None:
    calls = [answered(deposit(70, "d1"), BalanceAnswer(accountId="a", balance=1_070))]
    violation = balance_violation(calls, {}, OPENING)
    assert "off by -70" in violation.message
    assert [call.request.idempotency_key for call in violation.calls] == ["d1"]


def test_an_unanswered_deposit_may_or_may_not_have_happened() -> None:
    calls = [unanswered(deposit(70, "d1"))]
    for balance in (OPENING, OPENING + 70):
        assert [rule for rule, _ in rules(calls, {}, balance)] == ["unanswered"]
    assert [rule for rule, _ in rules(calls, {}, OPENING + 140)] == ["unanswered", "balance"]


def test_every_payment_that_received_a_call_needs_a_final_status() -> None:
    calls = [answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"))]
    assert rules(calls, {}, OPENING) == [("no-final-status", "p1")]
