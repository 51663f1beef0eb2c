"""The kill policy of a chaos run: SIGKILL the service, restate-server and PostgreSQL at random moments.

One loop per part kills it a random time after each (re)start, as its seeded draws say, and picks a
node among those it may kill, so that no more than ``max_nodes_down`` of restate-server's nodes are
ever down at once (the service and PostgreSQL are one node each). The supervisor restarts what was
killed, as it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import httpx

from payments.config import Part, Settings
from payments.runtime import health

if TYPE_CHECKING:
    from payments.tools.chaos.options import ChaosOptions

Probe = Callable[[httpx.AsyncClient, Part, int], Awaitable[bool]]
"""Whether a node of a part answers again after a kill: ``probe(http, part, node)``."""


class Processes(Protocol):
    """A stack's processes by part and node, as :class:`~payments.tools.launcher.LaunchedStack` has them."""

    def pid(self, part: Part, node: int = 1) -> int:
        """The pid in the pid file of ``node`` of ``part``; FileNotFoundError while there is none."""
        ...

    def kill(self, part: Part, node: int = 1) -> int:
        """SIGKILL ``node`` of ``part``; the pid it killed."""
        ...


def health_probe(settings: Settings) -> Probe:
    """A probe that asks a node's health checks (and a restate-server node if it knows the deployment).

    PostgreSQL answers when it takes a connection and a query on the ledger's URL.
    """

    async def answers(http: httpx.AsyncClient, part: Part, node: int) -> bool:
        if part == Part.DATABASE:
            return await health.database_answers(settings.ledger_url)
        urls = (
            health.node_ready_urls(settings.restate_nodes[node - 1])
            if part == Part.RESTATE_SERVER
            else [settings.service_health_url]
        )
        return await health.all_answer(http, urls)

    return answers


class Kills:
    """The kill loops of one run, and the kills they made."""

    def __init__(self, processes: Processes, options: ChaosOptions, seed: int, probe: Probe) -> None:
        self.processes = processes
        self.options = options
        self.seed = seed
        self.probe = probe
        self.counts: Counter[tuple[Part, int]] = Counter()
        """SIGKILLs by part and node (1 for the service and PostgreSQL)."""
        self.most_nodes_down = 0

    def of(self, part: Part) -> int:
        """How many times ``part`` was killed, on all its nodes."""
        return sum(count for (killed, _), count in self.counts.items() if killed == part)

    def by_node(self) -> dict[int, int]:
        """restate-server's kills per node; empty for a single node."""
        nodes = self.options.nodes
        return (
            {node: self.counts[Part.RESTATE_SERVER, node] for node in range(1, nodes + 1)}
            if nodes > 1
            else {}
        )

    async def loop(self, part: Part, stop: asyncio.Event) -> None:
        """SIGKILL ``part`` a random time after each (re)start, until ``stop`` is set.

        Each kill picks a random node among those it may kill (restate-server's nodes; the service and
        PostgreSQL are one each), so that no more than ``max_nodes_down`` are ever down at once.
        """
        waits = random.Random(f"{self.seed}:{part}")  # noqa: S311 - repeatable choices, not secrets
        picks = random.Random(f"{self.seed}:{part}:node")  # noqa: S311
        limit = self.options.max_nodes_down if part == Part.RESTATE_SERVER else 1
        down: dict[int, int] = {}
        """Killed nodes that do not answer yet, with the pid each was killed with."""
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not stop.is_set():
                if not await self.killable(http, part, down, limit):
                    await _wait(stop, 0.05)
                    continue
                if await _wait(stop, waits.uniform(self.options.kill_min, self.options.kill_max)):
                    return
                killable = await self.killable(http, part, down, limit)  # things moved meanwhile
                if not killable:
                    continue
                node = picks.choice(killable)
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                    down[node] = self.processes.kill(part, node)
                    self.counts[part, node] += 1
                    if part == Part.RESTATE_SERVER:
                        self.most_nodes_down = max(self.most_nodes_down, len(down))

    async def killable(
        self, http: httpx.AsyncClient, part: Part, down: dict[int, int], limit: int
    ) -> list[int]:
        """The nodes of ``part`` a kill may hit now without more than ``limit`` of them down.

        Forgets the nodes in ``down`` that answer again. One that was restarted and does not answer
        yet may be killed again, during its recovery: that leaves as many nodes down as before.
        """
        for node, killed in list(down.items()):
            if self._pid(part, node) not in (None, killed) and await self.probe(http, part, node):
                del down[node]
        restarting = [node for node, killed in down.items() if self._pid(part, node) not in (None, killed)]
        if len(down) >= limit:
            return restarting
        nodes = range(1, self.options.nodes + 1) if part == Part.RESTATE_SERVER else range(1, 2)
        return [*restarting, *(node for node in nodes if node not in down)]

    def _pid(self, part: Part, node: int) -> int | None:
        """The pid in the pid file of ``node`` of ``part``, or None while there is none."""
        try:
            return self.processes.pid(part, node)
        except (FileNotFoundError, ValueError):
            return None


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``event`` is set; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
