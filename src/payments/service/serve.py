"""The service process: virtual objects served over HTTP/2 by granian, inside this process's loop.

Run as ``python -m payments.service.serve``; it stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
import restate
import restate.server
import uvloop

from payments.config import Settings
from payments.service import ledger
from payments.service.handlers import accounts, payments, use_ledger
from payments.serving import serve_until


async def serve_until_stopped(app: restate.server_types.RestateAppT, settings: Settings) -> None:
    """Serve ``app`` on the service port until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The SDK takes over SIGTERM on its first request; hooks installed through it are kept.
    for signum in (signal.SIGTERM, signal.SIGINT):
        restate.server.install_shutdown_hook(loop, stop.set, signum)
    # granian's HTTP/2 runs in Rust and the handlers on this loop: one process, and about a quarter
    # less service CPU per request than hypercorn's pure-Python HTTP/2 (docs/performance.md).
    await serve_until(app, settings.host, settings.service_port, stop)


Resources = Callable[[Settings], contextlib.AbstractAsyncContextManager[None]]
"""What a service opens in its event loop before it serves, and closes after."""


def serve_signed(
    services: Sequence[restate.VirtualObject], name: str, resources: Resources | None = None
) -> int:
    """Serve ``services`` to restate-server only: requests must carry its signature."""
    settings = Settings.from_env()
    if not settings.identity_key:
        print(
            f"{name}: PAYMENTS_IDENTITY_KEY is not set; refusing to accept unsigned requests"
            " (start the service with `payments up`, which sets it)",
            file=sys.stderr,
        )
        return 2
    app = restate.app(services=list(services), identity_keys=[settings.identity_key])

    # uvloop wakes the loop for granian's Rust threads more cheaply than asyncio's self-pipe, which
    # took a sixth of the service's time under load (docs/performance.md).
    async def serve() -> None:
        async with resources(settings) if resources else contextlib.nullcontext():
            await serve_until_stopped(app, settings)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
    return 0


class LedgerUnreachableError(Exception):
    """The ledger did not take the service's connection at its start."""


@contextlib.asynccontextmanager
async def ledger_opened(settings: Settings) -> AsyncIterator[None]:
    """The ledger's pool, in the loop that serves the handlers, once its schema is this release's.

    The service's role may not change the schema: an administrator migrates it (``payments
    migrate``, which ``payments up`` runs first). A service that meets an older schema does not
    serve it.
    """
    try:
        opened = await ledger.Ledger.connect(settings.ledger_url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise LedgerUnreachableError(f"{type(error).__name__}: {error}") from error
    try:
        missing = await opened.missing_migrations()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ledger.LedgerError) as error:
        await opened.close()
        raise LedgerUnreachableError(f"{type(error).__name__}: {error}") from error
    if missing:
        await opened.close()
        raise LedgerUnreachableError(
            f"its schema lacks the migrations {', '.join(missing)}:"
            " run `payments migrate` as its administrator"
        )
    try:
        use_ledger(opened)
        yield
    finally:
        use_ledger(None)
        await opened.close()


def main() -> int:
    """Run the payment service process."""
    try:
        return serve_signed([payments, accounts], "payments.service.serve", ledger_opened)
    except LedgerUnreachableError as error:
        # Whatever supervises the service starts it again; its log says why in a line, not in the
        # driver's forty lines of stack (a database that is down or restarting, a wrong password).
        print(f"payments.service.serve: cannot reach the ledger ({error}); exiting", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
