"""A stack's admin APIs: a query goes to any node that answers."""

from __future__ import annotations

import httpx
import pytest

from payments.config import Settings
from payments.runtime.admin import Admins
from tests.helpers import NodeAdmin

pytestmark = pytest.mark.anyio

ROWS = [{"ids": 2}]


async def test_a_query_moves_to_the_next_node_and_stays_there() -> None:
    down, up = NodeAdmin(None), NodeAdmin(ROWS)
    admins = Admins([down, up])

    first = await admins.query("SELECT 1")
    second = await admins.query("SELECT 2")

    assert first == second == ROWS
    assert (down.asked, up.asked) == (["SELECT 1"], ["SELECT 1", "SELECT 2"])


async def test_when_no_node_answers_the_last_failure_is_raised() -> None:
    admins = Admins([NodeAdmin(None), NodeAdmin(None)])

    with pytest.raises(httpx.ConnectError):
        await admins.query("SELECT 1")


async def test_leaving_closes_every_node() -> None:
    nodes = [NodeAdmin(ROWS), NodeAdmin(ROWS)]

    async with Admins(nodes):
        pass

    assert all(node.closed for node in nodes)


async def test_a_stack_has_an_admin_api_per_node() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Admins([])
    async with Admins.of(Settings(nodes=3)) as admins:
        assert len(admins._admins) == 3
