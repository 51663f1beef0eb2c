"""A stack's admin APIs: a query goes to any node that answers."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from payments.config import Settings
from payments.runtime.admin import Admin, AdminError, Admins
from tests.helpers import NodeAdmin

pytestmark = pytest.mark.anyio

ROWS = [{"ids": 2}]


async def test_a_query_moves_to_the_next_node_and_stays_there() -> None:
    down, up = NodeAdmin(), NodeAdmin(ROWS)
    admins = Admins([down, up])

    first = await admins.query("SELECT 1")
    second = await admins.query("SELECT 2")

    assert first == second == ROWS
    assert (down.asked, up.asked) == (["SELECT 1"], ["SELECT 1", "SELECT 2"])


async def test_when_no_node_answers_the_last_failure_is_raised() -> None:
    admins = Admins([NodeAdmin(), NodeAdmin(failure=AdminError("query failed: 500 connect throttled", 500))])

    with pytest.raises(AdminError, match="connect throttled"):
        await admins.query("SELECT 1")


async def test_a_node_that_fails_the_query_is_passed_over() -> None:
    # A node that cannot reach a partition's leader answers 500 while the cluster moves it.
    throttled = NodeAdmin(failure=AdminError("query failed: 500 connect throttled", 500))
    up = NodeAdmin(ROWS)

    assert await Admins([throttled, up]).query("SELECT 1") == ROWS


async def test_a_statement_refused_by_one_node_is_not_sent_to_the_others() -> None:
    refused, other = NodeAdmin(failure=AdminError("query failed: 400 syntax error", 400)), NodeAdmin(ROWS)

    with pytest.raises(AdminError, match="syntax error"):
        await Admins([refused, other]).query("SELEC 1")
    assert other.asked == []


@pytest.mark.parametrize(
    "answer", [b"<html>not Restate</html>", b'{"no": "rows"}', b"[1, 2]"], ids=["html", "no-rows", "a-list"]
)
async def test_an_answer_without_rows_is_an_admin_error(answer: bytes) -> None:
    admin = Admin("http://127.0.0.1:1")
    admin._http = httpx.AsyncClient(
        base_url=admin.url, transport=httpx.MockTransport(lambda _: httpx.Response(200, content=answer))
    )
    async with admin:
        with pytest.raises(AdminError, match="without rows"):
            await admin.query("SELECT 1")


async def test_leaving_closes_every_node() -> None:
    nodes = [NodeAdmin(ROWS), NodeAdmin(ROWS)]

    async with contextlib.aclosing(Admins(nodes)):
        pass

    assert all(node.closed for node in nodes)


async def test_a_stack_has_an_admin_api_per_node() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Admins([])
    settings = Settings(nodes=3, admin_port=19_070)
    async with contextlib.aclosing(Admins.of(settings)) as admins:
        assert [admin.url for admin in admins._admins] == [
            "http://127.0.0.1:19070",
            "http://127.0.0.1:19071",
            "http://127.0.0.1:19072",
        ]
