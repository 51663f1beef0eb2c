"""Whether the parts of a running stack answer: the URLs to ask, and the one way of waiting on them.

The supervisor, the launcher, the chaos run and the bench all wait on the same checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Literal

import asyncpg
import httpx

from payments.config import Node

POLL_SECONDS: Final = 0.1
PROBES_PER_PARTITION: Final = 16
"""Read-only calls per partition through each node, with as many payment ids: the chance that some
partition gets none is below the number of partitions in ten million."""
DATABASE_CONNECT_SECONDS: Final = 2.0
Ready = Callable[[], Awaitable[bool]]
"""Whether a part answers now."""
Exited = Callable[[], str | None]
"""How a waiter learns that the awaited process ended: a description of its exit, or None while it runs."""


class NotReadyError(RuntimeError):
    """What was awaited exited, or was not ready in time; the message says which."""


def still_running() -> None:
    """An :data:`Exited` for waits on something that is not a child of ours."""


def node_ready_urls(node: Node) -> list[str]:
    """What answers once restate-server ``node`` serves and its admin API knows the deployment.

    A node that has just (re)started learns the deployment from the others a moment later.
    """
    return [*node.health_urls, f"{node.admin_url}/services/payments"]


def partition_probe_urls(ingress_urls: Sequence[str], partitions: int) -> list[str]:
    """GetStatus of many payment ids through every node: each answers once each partition has a leader.

    A cluster's ingresses answer their health check before each partition has a leader, which takes
    seconds after a cold start, and before they know a deployment just registered (a 404 meanwhile).
    getStatus is read-only, so the probes store nothing.
    """
    return [
        f"{url}/payments/readiness-probe-{index}/getStatus"
        for url in ingress_urls
        for index in range(PROBES_PER_PARTITION * partitions)
    ]


async def all_answer(
    http: httpx.AsyncClient, urls: Iterable[str], method: Literal["GET", "POST"] = "GET"
) -> bool:
    """Whether every one of ``urls`` answers ``method`` with a 2xx now."""
    for url in urls:
        try:
            if not (await http.request(method, url)).is_success:
                return False
        except httpx.TransportError:
            return False
    return True


def answering(urls: Iterable[str]) -> Ready:
    """A :data:`Ready` that says whether every one of ``urls`` answers a GET."""
    urls = list(urls)

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return await all_answer(http, urls)

    return ready


async def database_answers(url: str) -> bool:
    """Whether the PostgreSQL at ``url`` takes a connection and answers a query now."""
    try:
        connection = await asyncpg.connect(url, timeout=DATABASE_CONNECT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    try:
        return bool(await connection.fetchval("SELECT true", timeout=DATABASE_CONNECT_SECONDS))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    finally:
        connection.terminate()


async def wait_until(ready: Ready, *, exited: Exited, seconds: float, what: str) -> None:
    """Poll ``ready()`` until it says yes.

    Raises :class:`NotReadyError` naming ``what`` once ``exited()`` describes an exit, or after
    ``seconds``.
    """
    try:
        async with asyncio.timeout(seconds):
            while not await ready():
                if (exit_status := exited()) is not None:
                    raise NotReadyError(f"{what} exited at start ({exit_status})")
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise NotReadyError(f"{what} not ready after {seconds:.0f} s") from None


async def wait_until_answers(
    urls: Iterable[str],
    *,
    exited: Exited,
    seconds: float,
    what: str,
    method: Literal["GET", "POST"] = "GET",
) -> None:
    """Wait until every one of ``urls`` answers, as :func:`wait_until` waits."""
    urls = list(urls)
    async with httpx.AsyncClient(timeout=2.0) as http:
        await wait_until(lambda: all_answer(http, urls, method), exited=exited, seconds=seconds, what=what)


async def wait_until_every_partition_answers(
    ingress_urls: Sequence[str], partitions: int, *, exited: Exited, seconds: float
) -> None:
    """Wait until every node's ingress answers for every partition (:func:`partition_probe_urls`)."""
    await wait_until_answers(
        partition_probe_urls(ingress_urls, partitions),
        exited=exited,
        seconds=seconds,
        what="the partitions",
        method="POST",
    )
