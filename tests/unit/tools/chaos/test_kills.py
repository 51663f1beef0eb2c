"""Which nodes the chaos run may kill: never more down at once than allowed; no stack needed."""

from __future__ import annotations

import httpx
import pytest

from payments.config import Part
from payments.tools.chaos.kills import Kills
from payments.tools.chaos.options import ChaosOptions

pytestmark = pytest.mark.anyio


class FakeStack:
    """Pid files of a cluster's nodes, and which of them answer their health checks."""

    def __init__(self, nodes: int) -> None:
        self.pids: dict[int, int | None] = {node: 100 + node for node in range(1, nodes + 1)}
        self.answering = set(self.pids)

    def pid(self, _part: Part, node: int = 1) -> int:
        pid = self.pids[node]
        if pid is None:
            raise FileNotFoundError(node)
        return pid

    def kill(self, part: Part, node: int = 1) -> int:
        """No process, no pid file, until the supervisor restarts it."""
        pid = self.pid(part, node)
        self.pids[node] = None
        self.answering.discard(node)
        return pid

    def restart(self, node: int, pid: int) -> None:
        self.pids[node] = pid

    async def probe(self, _http: httpx.AsyncClient, _part: Part, node: int) -> bool:
        return node in self.answering


def kills_of(stack: FakeStack, nodes: int, max_nodes_down: int) -> Kills:
    options = ChaosOptions(duration=1, ids=1, accounts=1, nodes=nodes, max_nodes_down=max_nodes_down)
    return Kills(stack, options, seed=1, probe=stack.probe)


async def test_one_node_down_at_a_time_and_a_restarting_one_may_die_again() -> None:
    stack = FakeStack(3)
    kills = kills_of(stack, nodes=3, max_nodes_down=1)
    down: dict[int, int] = {}
    async with httpx.AsyncClient() as http:
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 1) == [1, 2, 3]

        down[2] = stack.kill(Part.RESTATE_SERVER, 2)
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 1) == []

        stack.restart(2, 202)  # back, but still recovering
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 1) == [2]

        stack.answering.add(2)
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 1) == [1, 2, 3]
        assert down == {}


async def test_two_nodes_down_only_when_allowed() -> None:
    stack = FakeStack(3)
    kills = kills_of(stack, nodes=3, max_nodes_down=2)
    down = {2: stack.kill(Part.RESTATE_SERVER, 2)}
    async with httpx.AsyncClient() as http:
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 2) == [1, 3]

        down[3] = stack.kill(Part.RESTATE_SERVER, 3)
        assert await kills.killable(http, Part.RESTATE_SERVER, down, 2) == []


async def test_the_service_is_one_node() -> None:
    stack = FakeStack(1)
    kills = kills_of(stack, nodes=3, max_nodes_down=1)
    down: dict[int, int] = {}
    async with httpx.AsyncClient() as http:
        assert await kills.killable(http, Part.SERVICE, down, 1) == [1]
