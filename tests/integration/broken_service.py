"""The service with a planted bug, for proving that the chaos checker catches one.

Run as ``python -m tests.integration.broken_service`` through ``PAYMENTS_SERVICE_MODULE``: it gives
every refund back twice, and is otherwise the real service.
"""

from __future__ import annotations

import sys

from payments import serve
from payments.service import RestateLedger
from payments.state_machine import Charge

_refund_once = RestateLedger.refund


async def refund_twice(self: RestateLedger, charge: Charge) -> None:
    """Give the charge back, and then once more."""
    await _refund_once(self, charge)
    await _refund_once(self, charge)


def main() -> int:
    """Serve the handlers with the bug in place."""
    RestateLedger.refund = refund_twice  # type: ignore[method-assign]
    return serve.main()


if __name__ == "__main__":
    sys.exit(main())
