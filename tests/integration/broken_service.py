"""The service with a planted bug, for proving that the chaos checker catches one.

Run as ``python -m tests.integration.broken_service`` through ``PAYMENTS_SERVICE_MODULE``;
``BROKEN_SERVICE_BUG`` picks the bug, and it is otherwise the real service:

- ``refund-twice`` (the default) gives every refund back twice;
- ``overdraw`` never declines a withdrawal, so that a drained account goes below zero;
- ``early-expiry`` ends each lifecycle after a tenth of the expiry window, so that a payment retried
  within the window is charged again and a cancel stops winning before its window is over.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Final

import restate

from payments.config import Settings
from payments.domain.balances import Account
from payments.domain.state_machine import Charge
from payments.service import serve
from payments.service.handlers import RestateEffects

BUG_VARIABLE: Final = "BROKEN_SERVICE_BUG"
_refund_once = RestateEffects.refund
_effects_init = RestateEffects.__init__


async def refund_twice(self: RestateEffects, charge: Charge) -> None:
    """Give the charge back, and then once more."""
    await _refund_once(self, charge)
    await _refund_once(self, charge)


def overdraw(self: Account, amount: int) -> Account:
    """Take the amount whatever the balance."""
    return Account(self.balance - amount, self.refundable + amount)


def early_effects(self: RestateEffects, ctx: restate.ObjectContext, settings: Settings) -> None:
    """Effects that arm the expiry timer for a tenth of the window."""
    _effects_init(self, ctx, dataclasses.replace(settings, expiry_seconds=settings.expiry_seconds / 10))


def plant_refund_twice() -> None:
    """Every refund is given back twice."""
    RestateEffects.refund = refund_twice  # type: ignore[method-assign]


def plant_overdraw() -> None:
    """No withdrawal is declined."""
    Account.after_withdrawal = overdraw  # type: ignore[method-assign]


def plant_early_expiry() -> None:
    """Lifecycles end after a tenth of the window."""
    RestateEffects.__init__ = early_effects  # type: ignore[method-assign]


BUGS: Final[dict[str, Callable[[], None]]] = {
    "refund-twice": plant_refund_twice,
    "overdraw": plant_overdraw,
    "early-expiry": plant_early_expiry,
}


def main() -> int:
    """Serve the handlers with the bug in place."""
    BUGS[os.environ.get(BUG_VARIABLE, "refund-twice")]()
    return serve.main()


if __name__ == "__main__":
    sys.exit(main())
