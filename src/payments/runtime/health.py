"""Whether the parts of a running stack answer: the URLs to ask, and the one way of asking them.

The supervisor, the launcher, the chaos run and the bench all wait on the same checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import httpx

from payments.config import Node

POLL_SECONDS = 0.1


class ExitedError(RuntimeError):
    """The process that was awaited exited before it answered."""


def node_ready_urls(node: Node) -> list[str]:
    """What answers once restate-server ``node`` serves and its admin API knows the deployment.

    A node that has just (re)started learns the deployment from the others a moment later.
    """
    return [*node.health_urls, f"{node.admin_url}/services/payments"]


async def answers(http: httpx.AsyncClient, urls: Iterable[str]) -> bool:
    """Whether every one of ``urls`` answers a GET with a 2xx now."""
    for url in urls:
        try:
            if not (await http.get(url)).is_success:
                return False
        except httpx.TransportError:
            return False
    return True


async def wait_until(ready: Callable[[], Awaitable[bool]], *, exited: Callable[[], bool]) -> None:
    """Poll ``ready()`` until it says yes; raise :class:`ExitedError` once ``exited()`` does.

    Callers bound the wait with :func:`asyncio.timeout`.
    """
    while not await ready():
        if exited():
            raise ExitedError
        await asyncio.sleep(POLL_SECONDS)


async def wait_until_answers(urls: Iterable[str], *, exited: Callable[[], bool]) -> None:
    """Wait until every one of ``urls`` answers, as :func:`wait_until` waits."""
    urls = list(urls)
    async with httpx.AsyncClient(timeout=2.0) as http:
        await wait_until(lambda: answers(http, urls), exited=exited)
