"""The service process: the virtual objects served over HTTP/2 by hypercorn.

Run as ``python -m payments.serve``; it stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import restate
import restate.server
from hypercorn.asyncio import serve
from hypercorn.config import Config

from payments.service import SETTINGS, accounts, payments

SHUTDOWN_GRACE_SECONDS = 2.0


def create_app(identity_key: str) -> restate.server_types.RestateAppT:
    """The ASGI application, answering only requests that restate-server signed."""
    return restate.app(services=[payments, accounts], identity_keys=[identity_key])


def hypercorn_config(host: str, port: int) -> Config:
    """Hypercorn settings for serving Restate: HTTP/2 without TLS, no access log."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = SHUTDOWN_GRACE_SECONDS
    return config


async def serve_until_stopped() -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The SDK takes over SIGTERM on its first request; hooks installed through it are kept.
    for signum in (signal.SIGTERM, signal.SIGINT):
        restate.server.install_shutdown_hook(loop, stop.set, signum)
    config = hypercorn_config(SETTINGS.host, SETTINGS.service_port)
    await serve(create_app(SETTINGS.identity_key), config, shutdown_trigger=stop.wait)


def main() -> int:
    """Run the service process; refuse to run without the key that authenticates restate-server."""
    if not SETTINGS.identity_key:
        print(
            "payments.serve: PAYMENTS_IDENTITY_KEY is not set; refusing to accept unsigned requests"
            " (start the service with `payments up`, which sets it)",
            file=sys.stderr,
        )
        return 2
    asyncio.run(serve_until_stopped())
    return 0


if __name__ == "__main__":
    sys.exit(main())
