"""The chaos checker over hand-made histories: quiet on a correct one, loud on each kind of bug."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from payments.domain.state_machine import State
from payments.service.answers import BalanceAnswer, DepositAnswer, PaymentAnswer
from payments.tools.chaos.invariants import (
    CANCEL,
    DEPOSIT,
    NEVER,
    PAY,
    Call,
    Expiry,
    LedgerState,
    Request,
    Transfer,
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


def debit(payment_id: str, at: float = 0.5, amount: int = 100, *, posted: bool = True) -> Transfer:
    return Transfer(f"payment:{payment_id}@{at}", "payment", "a", amount, at, posted, payment_id)


def refund(of: Transfer, at: float) -> Transfer:
    return Transfer(
        f"refund:{of.transfer_id}", "refund", "a", of.amount, at, True, of.payment_id, of.transfer_id
    )


def deposited(amount: int, balance_after: int, at: float = 0.5) -> Transfer:
    return Transfer(f"deposit:{at}", "deposit", "a", amount, at, balance_after=balance_after)


def books(*transfers: Transfer, cached: int | None = None) -> LedgerState:
    """A ledger holding ``transfers`` on account a, its balance cached as ``cached`` (right by default)."""
    sign = {"payment": -1, "refund": 1, "deposit": 1}
    total = OPENING + sum(sign[t.kind] * t.amount for t in transfers if t.posted)
    return LedgerState(transfers, {"a": total if cached is None else cached}, {"a": total})


def rules(
    calls: Sequence[Call],
    statuses: Mapping[str, PaymentAnswer],
    ledger: LedgerState,
    expiry: Expiry = NEVER,
    *,
    balance: int | None = None,
) -> list[tuple[str, str | None]]:
    """The rules broken, the balance read through the ingress being the ledger's unless given."""
    read = {"a": ledger.entry_sums["a"] if balance is None else balance}
    found = find_violations(OPENING, calls, statuses, read, ledger=ledger, expiry=expiry)
    return [(v.rule, v.payment_id) for v in found]


def violation_of(
    rule: str, calls: Sequence[Call], statuses: Mapping[str, PaymentAnswer], ledger: LedgerState
) -> Violation:
    read = {"a": ledger.entry_sums["a"]}
    [found] = [v for v in find_violations(OPENING, calls, statuses, read, ledger=ledger) if v.rule == rule]
    return found


def completed(payment_id: str, sent: float = 0.0, at: float = 1.0, amount: int = 100) -> Call:
    return answered(
        pay(payment_id, amount),
        status(payment_id, State.COMPLETED, "completed", amount, moved=True),
        sent=sent,
        at=at,
    )


COMPLETED_THEN_REFUNDED = [
    completed("p1"),
    answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100)),
    answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=2, at=3),
]
REFUNDED = {"p1": status("p1", State.CANCELLED, amount=100)}
P1 = debit("p1")
REFUNDED_BOOKS = books(P1, refund(P1, 2.5))


def test_a_correct_history_has_no_violation() -> None:
    calls = [
        *COMPLETED_THEN_REFUNDED,
        answered(cancel("p2"), status("p2", State.CANCELLED, "cancelled")),
        answered(pay("p2", 40), status("p2", State.CANCELLED, "cancelled", 40), sent=2, at=3),
        completed("p3", amount=30),
        answered(pay("p3", 31), None, code=409, error="payment id reused"),
        answered(pay("p4", 5_000), status("p4", State.NEW, "declined", 5_000)),
        # Two copies of one deposit, sent at once with one key, deposit once.
        answered(deposit(50, "d1"), DepositAnswer(accountId="a", balance=1_050, repeated=False)),
        answered(deposit(50, "d1"), DepositAnswer(accountId="a", balance=1_050, repeated=False)),
    ]
    statuses = {
        **REFUNDED,
        "p2": status("p2", State.CANCELLED),
        "p3": status("p3", State.COMPLETED, amount=30),
        "p4": status("p4", State.NEW),
    }
    ledger = books(
        deposited(50, 1_050, at=0.1),
        P1,
        debit("p3", 0.6, 30),
        debit("p4", 0.7, 5_000, posted=False),
        refund(P1, 2.5),
    )
    assert rules(calls, statuses, ledger) == []


def test_a_balance_the_ledger_transfers_do_not_explain_is_reported_with_its_suspects() -> None:
    ledger = books(P1, refund(P1, 2.5), cached=OPENING + 100)
    violation = violation_of("balance", COMPLETED_THEN_REFUNDED, REFUNDED, ledger)
    assert "cached in the ledger is 1100 (+100)" in violation.message
    assert violation.suspects == ("p1",)
    assert len(violation.calls) == 3
    assert "cancelPayment p1" in violation.describe()
    # The balance clients read is held against the ledger's transfers too.
    assert rules(COMPLETED_THEN_REFUNDED, REFUNDED, REFUNDED_BOOKS, balance=OPENING - 100) == [
        ("balance", None)
    ]


def test_a_payment_answered_completed_twice_moved_money_twice() -> None:
    calls = [completed("p1"), completed("p1")]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    ledger = books(P1, debit("p1", 0.7))
    assert rules(calls, statuses, ledger) == [("moved-twice", "p1"), ("charged-twice", "p1")]


def test_a_second_debit_the_answers_do_not_show_is_a_double_charge_in_the_ledger() -> None:
    calls = [completed("p1")]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    violation = violation_of("charged-twice", calls, statuses, books(P1, debit("p1", 0.6)))
    assert "both unrefunded at once" in violation.message
    assert violation.suspects == ("p1",)
    assert len(violation.transfers) == 2


def test_a_completion_a_client_saw_must_last_and_be_in_the_ledger() -> None:
    calls = [completed("p1")]
    assert rules(calls, {"p1": status("p1", State.NEW)}, books(P1)) == [("lost-completion", "p1")]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    assert rules(calls, statuses, books()) == [("ledger-mismatch", "p1")] * 2


def test_a_cancelled_payment_must_give_its_money_back() -> None:
    calls = [
        completed("p1"),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=2, at=3),
    ]
    found = rules(calls, {"p1": status("p1", State.CANCELLED)}, books(P1))
    assert found == [("kept-money", "p1"), ("ledger-mismatch", "p1")]


def test_a_payment_sent_after_an_answered_cancel_must_not_complete() -> None:
    calls = [
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1),
        completed("p1", sent=2, at=3),
    ]
    found = rules(calls, {"p1": status("p1", State.CANCELLED)}, books(debit("p1", 2.5)))
    assert ("cancel-lost-race", "p1") in found
    assert ("kept-money", "p1") in found


def test_a_payment_sent_while_the_cancel_was_in_flight_may_complete_first() -> None:
    calls = [
        completed("p1", sent=0, at=2),
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=1, at=3),
    ]
    assert rules(calls, REFUNDED, REFUNDED_BOOKS) == []


def test_a_cancel_nobody_sent_is_reported() -> None:
    calls = [answered(pay("p1"), status("p1", State.NEW, "declined", 100))]
    ledger = books(debit("p1", posted=False))
    assert rules(calls, {"p1": status("p1", State.CANCELLED)}, ledger) == [("phantom-cancel", "p1")]


def test_money_moved_for_no_call_is_reported() -> None:
    stray = debit("p9")
    assert rules([], {}, books(stray)) == [("unknown-charge", "p9")]
    calls = [completed("p1")]
    statuses = {"p1": status("p1", State.COMPLETED, amount=100)}
    # A refund nobody asked for, and one that gives back another id's debit.
    assert rules(calls, statuses, books(P1, refund(P1, 2))) == [
        ("unknown-refund", "p1"),
        ("ledger-mismatch", "p1"),
    ]
    wrong = Transfer("refund:x", "refund", "a", 100, 2.0, True, "p2", P1.transfer_id)
    cancelled = [answered(cancel("p2"), status("p2", State.CANCELLED, "cancelled"))]
    both = {**statuses, "p2": status("p2", State.CANCELLED)}
    assert ("unknown-refund", "p2") in rules([*calls, *cancelled], both, books(P1, wrong))


def test_a_conflict_is_only_right_for_another_body() -> None:
    calls = [completed("p1"), answered(pay("p1"), None, code=409, error="payment id reused")]
    found = rules(calls, {"p1": status("p1", State.COMPLETED, amount=100)}, books(P1))
    assert found == [("refused", "p1")]


def test_a_call_that_never_got_an_answer_is_reported() -> None:
    calls = [unanswered(pay("p1"))]
    assert rules(calls, {"p1": status("p1", State.NEW)}, books()) == [("unanswered", "p1")]


def test_an_acknowledged_deposit_must_be_in_the_ledger_once() -> None:
    calls = [answered(deposit(70, "d1"), DepositAnswer(accountId="a", balance=1_070, repeated=False))]
    violation = violation_of("lost-deposit", calls, {}, books())
    assert [call.request.idempotency_key for call in violation.calls] == ["d1"]
    assert rules(calls, {}, books(deposited(70, 1_070))) == []
    twice = books(deposited(70, 1_070), deposited(70, 1_140, at=0.6))
    assert rules(calls, {}, twice) == [("unknown-deposit", None)]


def test_a_deposit_answered_as_a_repeat_needs_a_deposit_of_its_amount_at_any_balance() -> None:
    calls = [answered(deposit(70, "d1"), DepositAnswer(accountId="a", balance=2_000, repeated=True))]
    violation = violation_of("lost-deposit", calls, {}, books())
    assert "as a repeat" in violation.message
    assert rules(calls, {}, books(deposited(70, 1_070))) == []
    assert rules(calls, {}, books(deposited(71, 1_071))) == [
        ("lost-deposit", None),
        ("unknown-deposit", None),
    ]


def test_an_unanswered_deposit_may_or_may_not_have_happened() -> None:
    calls = [unanswered(deposit(70, "d1"))]
    for ledger in (books(), books(deposited(70, 1_070))):
        assert [rule for rule, _ in rules(calls, {}, ledger)] == ["unanswered"]
    twice = books(deposited(70, 1_070), deposited(70, 1_140, at=0.6))
    assert [rule for rule, _ in rules(calls, {}, twice)] == ["unanswered", "unknown-deposit"]


def test_every_payment_that_received_a_call_needs_a_final_status() -> None:
    calls = [answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"))]
    assert rules(calls, {}, books()) == [("no-final-status", "p1")]


def test_a_payment_sent_after_an_answered_cancel_gets_cancelled_even_with_another_body() -> None:
    calls = [
        *COMPLETED_THEN_REFUNDED[::2],
        answered(pay("p1", 150), None, sent=4, at=5, code=409, error="payment id reused"),
    ]
    assert rules(calls, REFUNDED, REFUNDED_BOOKS) == [("cancel-lost-race", "p1")]


def test_a_conflict_sent_while_the_cancel_was_in_flight_may_come_first() -> None:
    calls = [
        completed("p1"),
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=2, at=4),
        answered(pay("p1", 150), None, sent=3, at=5, code=409, error="payment id reused"),
    ]
    assert rules(calls, REFUNDED, REFUNDED_BOOKS) == []


def test_no_balance_is_ever_negative() -> None:
    calls = [
        completed("p1", amount=1_200),
        answered(
            deposit(100, "d1"), DepositAnswer(accountId="a", balance=-100, repeated=False), sent=2, at=3
        ),
    ]
    statuses = {"p1": status("p1", State.COMPLETED, amount=1_200)}
    ledger = books(debit("p1", 0.5, 1_200), deposited(100, -100, at=2.5))
    # Money is conserved, and yet the account was overdrawn: seen in the deposit's answer and at the end.
    assert rules(calls, statuses, ledger) == [("negative-balance", None)] * 2


# -- lifecycles: an expiry window of 5 s, and the final state read long after --------------------------

WINDOW = Expiry(5.0, read_by=60.0)
EXPIRED = {"p1": status("p1", State.NEW)}


def test_an_id_is_charged_again_in_a_later_lifecycle_and_the_ledger_holds_both() -> None:
    calls = [
        completed("p1", sent=0, at=1),
        answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100), sent=2, at=3),
        completed("p1", sent=7, at=8),
    ]
    assert rules(calls, EXPIRED, books(P1, debit("p1", 7.5)), WINDOW) == []
    assert rules(calls, EXPIRED, books(P1), WINDOW) == [("ledger-mismatch", "p1")]
    assert lifecycles_seen(calls) == {"p1": 2}


def test_two_completions_within_one_window_are_a_double_charge() -> None:
    calls = [completed("p1", sent=0, at=1), completed("p1", sent=2, at=4)]
    found = rules(calls, EXPIRED, books(P1, debit("p1", 3)), WINDOW)
    assert found == [("moved-twice", "p1"), ("charged-twice", "p1")]


def test_a_completion_answered_a_window_after_the_first_was_sent_may_be_the_next_lifecycle() -> None:
    # The second call was sent before the first was answered, but answered more than a window after the
    # first was sent: the first may have run at once, expired, and the second run after that.
    calls = [completed("p1", sent=0, at=1), completed("p1", sent=0.5, at=5.5)]
    assert rules(calls, EXPIRED, books(debit("p1", 0.1), debit("p1", 5.2)), WINDOW) == []


def test_a_cancel_wins_in_the_lifecycle_it_lands_in_and_not_after_it() -> None:
    tombstone = answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1)
    inside = completed("p1", sent=2, at=3)
    after = completed("p1", sent=6, at=7)
    assert rules([tombstone, inside], EXPIRED, books(debit("p1", 2.5)), WINDOW) == [
        ("cancel-lost-race", "p1")
    ]
    assert rules([tombstone, after], EXPIRED, books(debit("p1", 6.5)), WINDOW) == []
    assert lifecycles_seen([tombstone, after]) == {"p1": 2}


def test_a_cancel_after_the_window_refunds_the_last_charge_and_wins_its_own_window() -> None:
    calls = [
        completed("p1", sent=0, at=1),
        # The window expired: the cancel lands in a NEW lifecycle, refunds the earlier charge, and a
        # payment sent after it, in its window, is cancelled.
        answered(cancel("p1"), status("p1", State.CANCELLED, "refunded", 100, moved=True), sent=6, at=7),
        answered(pay("p1"), status("p1", State.CANCELLED, "cancelled", 100), sent=8, at=9),
    ]
    read_soon = Expiry(5.0, read_by=10.0)
    assert rules(calls, REFUNDED, books(P1, refund(P1, 6.5)), read_soon) == []
    assert rules(calls, REFUNDED, books(P1), read_soon) == [("ledger-mismatch", "p1")] * 2


def test_after_expiry_the_final_state_no_longer_shows_what_clients_saw() -> None:
    calls = [
        completed("p1"),
        answered(pay("p1", 150), None, sent=2, at=3, code=409, error="payment id reused"),
    ]
    assert rules(calls, EXPIRED, books(P1), WINDOW) == []
    # Read within the window, the same final state breaks the rules it always did.
    soon = Expiry(5.0, read_by=4.0)
    assert rules(calls, EXPIRED, books(P1), soon) == [("refused", "p1"), ("lost-completion", "p1")]


def test_the_ledger_tells_what_a_lost_attempt_did() -> None:
    calls = [
        completed("p1", sent=0, at=1),
        # One attempt of this call was lost: it may have run in the next lifecycle and charged again.
        answered(pay("p1"), status("p1", State.COMPLETED, "repeated", 100), sent=6, at=7, lost=1),
    ]
    for ledger in (books(P1), books(P1, debit("p1", 6.5))):
        assert rules(calls, EXPIRED, ledger, WINDOW) == []
    assert rules(calls, EXPIRED, books(P1, debit("p1", 3)), WINDOW) == [("charged-twice", "p1")]


def test_lifecycles_seen_counts_completions_and_tombstones_that_something_separates() -> None:
    calls = [
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=0, at=1),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=2, at=3),
        answered(pay("p1"), status("p1", State.NEW, "declined", 100), sent=9, at=10),
        answered(cancel("p1"), status("p1", State.CANCELLED, "cancelled"), sent=11, at=12),
        answered(pay("p2"), status("p2", State.NEW, "declined", 100)),
    ]
    assert lifecycles_seen(calls) == {"p1": 2, "p2": 0}
