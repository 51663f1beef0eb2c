"""The rules of an account balance, in integer cents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_BALANCE: Final = 2**53 - 1
"""Largest balance an account can ever have, so that every JSON client reads balances exactly."""


class DepositRefusedError(ValueError):
    """A deposit the balance rules refuse; the message names the field, ``amount``."""


@dataclass(frozen=True, slots=True)
class Account:
    """An account's balance, and the cents its payments took that a cancel may still give back.

    A refund is never refused (the money was the account's), so a deposit is what keeps the
    balance within :data:`MAX_BALANCE`: it may not take ``balance + refundable`` above it. Neither
    a withdrawal nor a refund changes that sum, so no refund can lift the balance past the maximum.
    The account is not told when a payment's window expires, so an expired payment still counts as
    refundable: the room for deposits shrinks by every payment ever made and not refunded.
    """

    balance: int
    refundable: int = 0

    def after_deposit(self, amount: int) -> Account:
        """The account after a deposit, refused when the balance could pass :data:`MAX_BALANCE`."""
        if self.balance + self.refundable + amount > MAX_BALANCE:
            held = f" plus {self.refundable} cents that cancels may refund" if self.refundable else ""
            raise DepositRefusedError(f"amount: the balance{held} would exceed {MAX_BALANCE} cents")
        return Account(self.balance + amount, self.refundable)

    def after_withdrawal(self, amount: int) -> Account | None:
        """The account after a payment's withdrawal, or None when it would overdraw the account."""
        if amount > self.balance:
            return None
        return Account(self.balance - amount, self.refundable + amount)

    def after_refund(self, amount: int) -> Account:
        """The account after a payment's withdrawal is given back."""
        # An account stored before refundable was tracked may refund more than it counts.
        return Account(self.balance + amount, max(0, self.refundable - amount))
