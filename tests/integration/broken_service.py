"""The service with a planted bug, for proving that the chaos checker catches one.

Run as ``python -m tests.integration.broken_service`` through ``PAYMENTS_SERVICE_MODULE``;
``BROKEN_SERVICE_BUG`` picks the bug, and it is otherwise the real service:

- ``withdraw-twice`` (the default) takes every payment's charge a second time, under a transfer id of
  its own, so the ledger cannot tell it from another payment;
- ``early-expiry`` ends each lifecycle after a tenth of the expiry window, so that a payment retried
  within the window is charged again and a cancel stops winning before its window is over.

A refund twice or an overdraft cannot be planted any more: the ledger refunds a debit once and
refuses a negative balance, whatever the service asks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any, Final

import restate

from payments.config import Settings
from payments.domain.state_machine import Charge
from payments.service import serve
from payments.service.handlers import OPENING, RestateEffects, journaled, the_ledger

BUG_VARIABLE: Final = "BROKEN_SERVICE_BUG"
_withdraw_once = RestateEffects.withdraw
_effects_init = RestateEffects.__init__


async def withdraw_twice(self: RestateEffects, charge: Charge) -> str | None:
    """Take the charge, and when it was taken, take it once more."""
    taken = await _withdraw_once(self, charge)
    if taken is not None:
        ctx: restate.ObjectContext = self._ctx

        async def again() -> dict[str, Any]:
            withdrawal = await the_ledger().withdraw(
                f"{taken}:again", charge.account_id, charge.amount, ctx.key(), opening=OPENING
            )
            return withdrawal.to_json()

        await journaled(ctx, "withdraw again", again)
    return taken


def early_effects(self: RestateEffects, ctx: restate.ObjectContext, settings: Settings) -> None:
    """Effects that arm the expiry timer for a tenth of the window."""
    _effects_init(self, ctx, dataclasses.replace(settings, expiry_seconds=settings.expiry_seconds / 10))


def plant_withdraw_twice() -> None:
    """Every payment is charged twice."""
    RestateEffects.withdraw = withdraw_twice  # type: ignore[method-assign]


def plant_early_expiry() -> None:
    """Lifecycles end after a tenth of the window."""
    RestateEffects.__init__ = early_effects  # type: ignore[method-assign]


BUGS: Final[dict[str, Callable[[], None]]] = {
    "withdraw-twice": plant_withdraw_twice,
    "early-expiry": plant_early_expiry,
}


def main() -> int:
    """Serve the handlers with the bug in place."""
    BUGS[os.environ.get(BUG_VARIABLE, "withdraw-twice")]()
    return serve.main()


if __name__ == "__main__":
    sys.exit(main())
