"""The rules of an account balance, in integer cents."""

from __future__ import annotations

from payments.validation import MAX_BALANCE, InvalidInputError


def after_deposit(balance: int, amount: int) -> int:
    """The balance after a deposit, which may not pass :data:`MAX_BALANCE`."""
    if balance + amount > MAX_BALANCE:
        raise InvalidInputError(f"amount: the balance would exceed {MAX_BALANCE} cents")
    return balance + amount


def after_withdrawal(balance: int, amount: int) -> int | None:
    """The balance after a withdrawal, or None when it would overdraw the account."""
    if amount > balance:
        return None
    return balance - amount
