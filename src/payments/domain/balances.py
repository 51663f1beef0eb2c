"""The limits of an account balance, in integer cents.

The ledger enforces them (``payments.service.ledger``): no balance below zero, and no deposit that
could, with the refunds still to come, take a balance above :data:`MAX_BALANCE`.
"""

from __future__ import annotations

from typing import Final

MAX_BALANCE: Final = 2**53 - 1
"""Largest balance an account can ever have, so that every JSON client reads balances exactly."""


class DepositRefusedError(ValueError):
    """A deposit the balance rules refuse; the message names the field, ``amount``."""
