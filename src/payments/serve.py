"""The service process: the virtual objects served over HTTP/2 by hypercorn.

Run as ``python -m payments.serve``; it stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal

import restate
import restate.server
from hypercorn.asyncio import serve
from hypercorn.config import Config

from payments.service import SETTINGS, accounts, payments

SHUTDOWN_GRACE_SECONDS = 2.0


def create_app() -> restate.server_types.RestateAppT:
    """The ASGI application that restate-server calls."""
    return restate.app(services=[payments, accounts])


def hypercorn_config(host: str, port: int) -> Config:
    """Hypercorn settings for serving Restate: HTTP/2 without TLS, no access log."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = SHUTDOWN_GRACE_SECONDS
    return config


async def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The SDK takes over SIGTERM on its first request; hooks installed through it are kept.
    for signum in (signal.SIGTERM, signal.SIGINT):
        restate.server.install_shutdown_hook(loop, stop.set, signum)
    config = hypercorn_config(SETTINGS.host, SETTINGS.service_port)
    await serve(create_app(), config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    asyncio.run(main())
