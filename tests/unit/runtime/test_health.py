"""The health checks every waiter shares, against fake endpoints: no server needed."""

from __future__ import annotations

import httpx
import pytest

from payments.config import Settings
from payments.runtime import health

pytestmark = pytest.mark.anyio


def endpoint(statuses: dict[str, int]) -> httpx.AsyncClient:
    """A client whose GETs answer with the status of their path; paths missing are unreachable."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path not in statuses:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(statuses[request.url.path])

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({"/a": 200, "/b": 204}, True),
        ({"/a": 200, "/b": 503}, False),
        ({"/a": 200}, False),
    ],
    ids=["all-answer", "one-fails", "one-unreachable"],
)
async def test_answers_needs_every_url(statuses: dict[str, int], expected: bool) -> None:
    async with endpoint(statuses) as http:
        assert await health.answers(http, ["http://x/a", "http://x/b"]) is expected


async def test_wait_until_polls_until_ready() -> None:
    polls = 0

    async def ready() -> bool:
        nonlocal polls
        polls += 1
        return polls == 3

    await health.wait_until(ready, exited=lambda: False)

    assert polls == 3


async def test_wait_until_gives_up_when_the_process_exited() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(health.ExitedError):
        await health.wait_until(never, exited=lambda: True)


def test_a_node_is_ready_once_its_admin_api_knows_the_deployment() -> None:
    (node,) = Settings().restate_nodes

    assert health.node_ready_urls(node) == [
        "http://127.0.0.1:9070/health",
        "http://127.0.0.1:8080/restate/health",
        "http://127.0.0.1:9070/services/payments",
    ]
