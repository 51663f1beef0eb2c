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
async def test_all_answer_needs_every_url(statuses: dict[str, int], expected: bool) -> None:
    async with endpoint(statuses) as http:
        assert await health.all_answer(http, ["http://x/a", "http://x/b"]) is expected


async def test_wait_until_polls_until_ready() -> None:
    polls = 0

    async def ready() -> bool:
        nonlocal polls
        polls += 1
        return polls == 3

    await health.wait_until(ready, exited=health.still_running, seconds=10, what="it")

    assert polls == 3


async def never() -> bool:
    return False


async def test_wait_until_gives_up_when_the_process_exited() -> None:
    with pytest.raises(health.NotReadyError, match=r"^the service exited at start \(exit code 3\)$"):
        await health.wait_until(never, exited=lambda: "exit code 3", seconds=10, what="the service")


async def test_wait_until_gives_up_after_its_time() -> None:
    with pytest.raises(health.NotReadyError, match=r"^the service not ready after 0 s$"):
        await health.wait_until(never, exited=health.still_running, seconds=0.2, what="the service")


def test_partition_probes_ask_every_node_for_many_ids() -> None:
    urls = health.partition_probe_urls(["http://n1", "http://n2"], partitions=4)

    per_node = 4 * health.PROBES_PER_PARTITION
    assert len(set(urls)) == len(urls) == 2 * per_node
    assert all(url.endswith("/getStatus") for url in urls)
    assert sum(url.startswith("http://n2/payments/") for url in urls) == per_node


async def test_the_partition_wait_lasts_until_every_probe_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    answered: set[str] = set()
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts <= 30:  # a node that does not know the deployment yet
            return httpx.Response(404, json={"message": "service 'payments' not found"})
        answered.add(str(request.url))
        return httpx.Response(200, json={})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **options: real_client(**options, transport=httpx.MockTransport(handle))
    )

    await health.wait_until_every_partition_answers(
        ["http://n1", "http://n2"], 1, exited=health.still_running, seconds=30
    )

    assert answered == set(health.partition_probe_urls(["http://n1", "http://n2"], 1))


def test_a_node_is_ready_once_its_admin_api_knows_the_deployment() -> None:
    (node,) = Settings().restate_nodes

    assert health.node_ready_urls(node) == [
        "http://127.0.0.1:9070/health",
        "http://127.0.0.1:8080/restate/health",
        "http://127.0.0.1:9070/services/payments",
    ]
