"""The service, dying right after a payment's withdrawal commits and before Restate journals it.

Run as ``python -m tests.integration.crash_after_commit`` through ``PAYMENTS_SERVICE_MODULE``. The
process exits at once after the first commit of each payment id's withdrawal, once per id: the ids
it already died for are lines of the file ``CRASH_AFTER_COMMIT_FILE`` names, which outlives the
restarts. This is the window in which ``ctx.run`` runs its action twice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from payments.service import serve
from payments.service.ledger import Ledger, Withdrawal

FILE_VARIABLE: Final = "CRASH_AFTER_COMMIT_FILE"
_withdraw = Ledger.withdraw


async def withdraw_then_die(
    self: Ledger,
    transfer_id: str,
    account_id: str,
    amount: int,
    payment_id: str,
    *,
    opening: int | None,
) -> Withdrawal:
    """Withdraw; then, the first time for ``payment_id``, exit before the result is returned."""
    withdrawal = await _withdraw(self, transfer_id, account_id, amount, payment_id, opening=opening)
    if first_time(payment_id):
        os._exit(70)
    return withdrawal


def first_time(payment_id: str) -> bool:
    """Whether the process has not died for ``payment_id`` yet; if so, it is recorded as done now."""
    crashed = Path(os.environ[FILE_VARIABLE])
    if payment_id in crashed.read_text().split():
        return False
    with crashed.open("a") as record:
        record.write(f"{payment_id}\n")
        record.flush()
        os.fsync(record.fileno())
    return True


def main() -> int:
    """Serve the handlers with the crash in place."""
    Ledger.withdraw = withdraw_then_die  # type: ignore[method-assign]
    return serve.main()


if __name__ == "__main__":
    sys.exit(main())
