"""The console process: ``python -m payments.console.serve``, which ``payments up`` runs and watches.

It opens its read-only pool and its admin client, serves until SIGTERM or SIGINT, and then ends the
live feeds' streams before it stops serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import uvloop

from payments.config import Settings
from payments.console.app import Console, create_app
from payments.console.books import Books
from payments.console.restate import RestateView
from payments.runtime.admin import Admins
from payments.serving import serve_until


async def serve(settings: Settings) -> None:
    """Serve the console on ``settings.console_port`` until a stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    books = await Books.connect(settings.console_ledger_url)
    try:
        async with contextlib.aclosing(Admins.of(settings)) as admins:
            console = Console(settings, books, RestateView(admins), stopping=stop)
            await serve_until(create_app(console), settings.host, settings.console_port, stop)
    finally:
        await books.close()


def main() -> int:
    """Run the console process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admin query otherwise
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(Settings.from_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
