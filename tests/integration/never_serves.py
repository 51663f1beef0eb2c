"""A service process that never starts serving, for stopping ``payments up`` halfway through its start.

Run as ``python -m tests.integration.never_serves`` through ``PAYMENTS_SERVICE_MODULE``.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    """Wait for SIGTERM without ever listening."""
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
