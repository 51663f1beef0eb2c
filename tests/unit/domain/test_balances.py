"""The balance rules: no overdraft, and no balance above MAX_BALANCE, refunds included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.domain.balances import MAX_BALANCE, Account, DepositRefusedError
from payments.service.validation import MAX_AMOUNT


def test_a_deposit_may_fill_the_balance_to_the_maximum() -> None:
    assert Account(MAX_BALANCE - 5).after_deposit(5) == Account(MAX_BALANCE)


def test_a_deposit_above_the_maximum_is_refused_naming_amount() -> None:
    with pytest.raises(DepositRefusedError, match=r"^amount: "):
        Account(MAX_BALANCE - 5).after_deposit(6)


def test_pay_deposit_to_the_maximum_cancel_cannot_pass_the_maximum() -> None:
    """The review's sequence: the deposit that would leave no room for the refund is refused."""
    paid = Account(MAX_BALANCE).after_withdrawal(100)
    assert paid == Account(MAX_BALANCE - 100, refundable=100)

    with pytest.raises(DepositRefusedError, match=r"^amount: .*100 cents that cancels may refund"):
        paid.after_deposit(100)
    assert paid.after_refund(100) == Account(MAX_BALANCE)


def test_a_declined_withdrawal_changes_nothing() -> None:
    assert Account(99, refundable=7).after_withdrawal(100) is None


def test_a_refund_is_never_refused_and_no_longer_counts() -> None:
    assert Account(0, refundable=300).after_refund(300) == Account(300)


operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "pay", "cancel"]), st.integers(1, MAX_AMOUNT)), max_size=40
)


@given(opening=st.integers(0, MAX_BALANCE), steps=operations)
def test_no_sequence_of_operations_passes_the_maximum(opening: int, steps: list[tuple[str, int]]) -> None:
    """Deposits, payments and cancels (each refunding one earlier payment) in any order."""
    account, payments = Account(opening), list[int]()
    for operation, amount in steps:
        if operation == "deposit":
            try:
                account = account.after_deposit(amount)
            except DepositRefusedError:
                continue
        elif operation == "pay":
            paid = account.after_withdrawal(amount)
            if paid is not None:
                account = paid
                payments.append(amount)
        elif payments:
            account = account.after_refund(payments.pop())
        assert 0 <= account.balance <= MAX_BALANCE
        assert account.refundable == sum(payments)
