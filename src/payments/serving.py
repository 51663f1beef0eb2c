"""One HTTP server for the stack's Python processes: granian, inside the calling process's loop.

The payment service and the operator console both serve an ASGI app this way, so each is one
process that the supervisor watches, with no worker processes that could outlive it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server


class ServingStoppedError(RuntimeError):
    """The HTTP server ended on its own."""


async def serve_until(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the ASGI ``app`` on ``host:port`` until ``stop`` is set.

    Raises :class:`ServingStoppedError` when granian gives up by itself (it could not listen, or
    its worker died), so that the process exits and its supervisor restarts it instead of keeping
    one alive that serves nothing.
    """
    server = Server(
        app, address=host, port=port, interface=Interfaces.ASGI, http=HTTPModes.auto, log_enabled=False
    )
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        stopping.cancel()
        serving.result()
        raise ServingStoppedError("granian stopped serving without being asked to")
    server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
    await serving
