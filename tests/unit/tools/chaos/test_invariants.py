"""The chaos checker over hand-made histories: quiet on a correct one, loud on each kind of bug."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from payments.domain.state_machine import State
from payments.service.answers import BalanceAnswer, PaymentAnswer
from payments.tools.chaos.invariants import (
    CANCEL,
    DEPOSIT,
    NEVER,
    PAY,
    Call,
    Expiry,
    Request,
    Violation,
    find_violations,
    lifecycles_seen,
)

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
    lost: int = 0,
) -> Call:
    return Call(request, sent, at, 1 + lost, code, answer if code == 200 else None, error, lost)


def unanswered(request: Request) -> Call:
    return Call(request, 0.0, None, 7, None, None, "ConnectError: refused")


def rules(
    calls: Sequence[Call], statuses: Mapping[str, PaymentAnswer], balance: int, expiry: Expiry = NEVER
) -> list[tuple[str, str | None]]:
    return [(v.rule, v.payment_id) for v in find_violations(OPENING, calls, statuses, {"a": balance}, expiry)]


def balance_violation(
    calls: Sequence[Call], statuses: Mapping[str, PaymentAnswer], balance: int
) -> Violation:
    [violation] = [
        v for v in find_violations(OPENING, calls, statuses, {"a": balance}) if v.rule == "balance"
    ]
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


def test_a_payment_sent_after_an_answered_cancel_gets_cancelled_even_with_another_body() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=2, at=3),
        answered(pay("p1", 150), None, sent=4, at=5, code=409, error="payment id reused"),
    ]
    assert rules(calls, REFUNDED, OPENING) == [("cancel-lost-race", "p1")]


def test_a_conflict_sent_while_the_cancel_was_in_flight_may_come_first() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=2, at=4),
        answered(pay("p1", 150), None, sent=3, at=5, code=409, error="payment id reused"),
    ]
    assert rules(calls, REFUNDED, OPENING) == []


def test_no_balance_is_ever_negative() -> None:
    calls = [
        answered(pay("p1", 1_200), status("p1", State.COMPLETED, "completed", 1_200, moved=True)),
        answered(deposit(100, "d1"), BalanceAnswer(accountId="a", balance=-100), sent=2, at=3),
    ]
    statuses = {"p1": status("p1", State.COMPLETED, amount=1_200)}
    # Money is conserved, and yet the account was overdrawn: seen in the deposit's answer and at the end.
    assert rules(calls, statuses, OPENING + 100 - 1_200) == [("negative-balance", None)] * 2


# -- lifecycles: an expiry window of 5 s, and the final state read long after --------------------------

WINDOW = Expiry(5.0, read_by=60.0)
EXPIRED = {"p1": status("p1", State.NEW)}


def test_an_id_is_charged_again_in_a_later_lifecycle_and_the_balance_counts_both() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0, at=1),
        answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100), sent=2, at=3),
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=7, at=8),
    ]
    assert rules(calls, EXPIRED, OPENING - 200, WINDOW) == []
    assert rules(calls, EXPIRED, OPENING - 100, WINDOW) == [("balance", None)]
    assert lifecycles_seen(calls) == {"p1": 2}


def test_two_completions_within_one_window_are_a_double_charge() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0, at=1),
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=2, at=4),
    ]
    assert rules(calls, EXPIRED, OPENING - 200, WINDOW) == [("moved-twice", "p1")]


def test_a_completion_answered_a_window_after_the_first_was_sent_may_be_the_next_lifecycle() -> None:
    # The second call was sent before the first was answered, but answered more than a window after the
    # first was sent: the first may have run at once, expired, and the second run after that.
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0, at=1),
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0.5, at=5.5),
    ]
    assert rules(calls, EXPIRED, OPENING - 200, WINDOW) == []


def test_a_cancel_wins_in_the_lifecycle_it_lands_in_and_not_after_it() -> None:
    tombstone = answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1)
    inside = answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=2, at=3)
    after = answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=6, at=7)
    assert rules([tombstone, inside], EXPIRED, OPENING - 100, WINDOW) == [("cancel-lost-race", "p1")]
    assert rules([tombstone, after], EXPIRED, OPENING - 100, WINDOW) == []
    assert lifecycles_seen([tombstone, after]) == {"p1": 2}


def test_after_expiry_the_final_state_no_longer_shows_what_clients_saw() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True)),
        answered(pay("p1", 150), None, sent=2, at=3, code=409, error="payment id reused"),
    ]
    assert rules(calls, EXPIRED, OPENING - 100, WINDOW) == []
    # Read within the window, the same final state breaks the rules it always did.
    soon = Expiry(5.0, read_by=4.0)
    assert rules(calls, EXPIRED, OPENING - 100, soon) == [
        ("refused", "p1"),
        ("lost-completion", "p1"),
        ("balance", None),
    ]


def test_a_charge_that_lost_answers_could_hide_is_bounded_not_guessed() -> None:
    calls = [
        answered(pay("p1"), status("p1", State.COMPLETED, "completed", 100, moved=True), sent=0, at=1),
        # One attempt of this call was lost: it may have run in the next lifecycle and charged again.
        answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100), sent=6, at=7, lost=1),
    ]
    for balance in (OPENING - 100, OPENING - 200):
        assert rules(calls, EXPIRED, balance, WINDOW) == []
    violation = [
        v
        for v in find_violations(OPENING, calls, EXPIRED, {"a": OPENING - 300}, WINDOW)
        if v.rule == "balance"
    ]
    assert "net charges from 100 to 200" in violation[0].message
    assert "off by -100" in violation[0].message
    # Without the lost attempt nothing is uncertain: the repeat ran in the first lifecycle.
    exact = [calls[0], answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100), sent=2, at=3)]
    assert rules(exact, EXPIRED, OPENING - 200, WINDOW) == [("balance", None)]


def test_lifecycles_seen_counts_completions_and_tombstones_that_something_separates() -> None:
    calls = [
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=2, at=3),
        answered(pay("p1"), status("p1", State.NEW, "declined", 100), sent=9, at=10),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=11, at=12),
        answered(pay("p2"), status("p2", State.NEW, "declined", 100)),
    ]
    assert lifecycles_seen(calls) == {"p1": 2, "p2": 0}
