"""`payments up --nodes 3`: one cluster behind three ingresses, that keeps answering when a node dies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from payments.client import PaymentsClient, until_answered
from payments.config import Part, Settings
from payments.domain.state_machine import State
from payments.tools.chaos.options import ChaosOptions
from payments.tools.chaos.run import run_chaos
from payments.tools.launcher import LaunchedStack
from tests.helpers import wait_for

OPENING = Settings().opening_balance
NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    """Three restate-server nodes and the service, on free ports and a fresh data directory."""
    with LaunchedStack(tmp_path_factory.mktemp("cluster"), nodes=NODES) as launched:
        yield launched


def test_up_starts_every_node_and_prints_its_ingress(cluster: LaunchedStack) -> None:
    printed = cluster.log_path.read_text()
    assert all(url in printed for url in cluster.settings.ingress_urls)
    assert len({cluster.pid(Part.RESTATE_SERVER, node) for node in range(1, NODES + 1)}) == NODES
    # One cluster, not three: node 3's admin API sees the deployment that node 1 registered, and
    # every node is a member of the one metadata store.
    with httpx.Client(timeout=10) as http:
        health = http.get(f"{cluster.settings.restate_nodes[2].admin_url}/cluster-health").json()
    members = health["metadata_cluster_health"]["members"]
    assert sorted(members) == [1, 2, 3], health


@pytest.mark.anyio
async def test_a_payment_through_node_2_is_seen_through_node_3(cluster: LaunchedStack, unique: str) -> None:
    _, two, three = cluster.settings.ingress_urls
    payment, account = f"{unique}-p", f"{unique}-a"
    async with PaymentsClient(two) as through_two, PaymentsClient(three) as through_three:
        assert (await through_two.make_payment(payment, account, 70)).outcome == "completed"

        assert (await through_three.get_status(payment)).state is State.COMPLETED
        assert (await through_three.make_payment(payment, account, 70)).outcome == "repeated"
        assert (await through_three.balance(account)).balance == OPENING - 70


@pytest.mark.anyio
async def test_killing_a_node_keeps_the_service_answering_through_the_others(
    cluster: LaunchedStack, unique: str
) -> None:
    urls = cluster.settings.ingress_urls
    killed = cluster.kill(Part.RESTATE_SERVER, 1)

    # The console asks another node's admin API while node 1 is down; until the partitions node 1
    # led have moved, those answer that they cannot reach it: a 503 page saying so, never a 500.
    async with httpx.AsyncClient(base_url=cluster.settings.console_url, timeout=30) as console:
        overview = await console.get("/")
    assert overview.status_code in (200, 503), overview.text
    assert "Traceback" not in overview.text

    # A client that starts at the dead node moves on to the others, with the same payment ids.
    async with PaymentsClient(urls, timeout=60) as client:
        for index in range(10):
            payment = f"{unique}-p{index}"
            answer = await until_answered(lambda: client.make_payment(payment, f"{unique}-a", 1))  # noqa: B023
            assert answer.outcome == "completed"
        assert client.ingress_url != urls[0]
    async with PaymentsClient(urls[2], timeout=60) as through_three:
        assert (await until_answered(lambda: through_three.balance(f"{unique}-a"))).balance == OPENING - 10

    wait_for(lambda: cluster.pid(Part.RESTATE_SERVER, 1) != killed, "node 1 to be restarted")
    cluster.wait_ready()
    async with httpx.AsyncClient(base_url=cluster.settings.console_url, timeout=30) as console:
        page = await console.get(f"/payments/{unique}-p9")
    assert page.status_code == 200, page.text
    async with PaymentsClient(urls[0], timeout=60) as through_one:
        status = await until_answered(lambda: through_one.get_status(f"{unique}-p9"))
        assert status.state is State.COMPLETED


SHORT_CLUSTER_STORM = ChaosOptions(
    duration=30,
    ids=240,
    accounts=6,
    concurrency=32,
    seed=20_241_124,
    nodes=NODES,
    kill_min=1.0,
    kill_max=4.0,
    settle_timeout=120,
)


@pytest.mark.slow
def test_a_storm_with_node_kills_keeps_every_invariant(tmp_path: Path) -> None:
    report = run_chaos(dataclasses.replace(SHORT_CLUSTER_STORM, data_dir=tmp_path / "cluster"))

    assert report.violations == [], "\n".join(violation.describe() for violation in report.violations)
    assert report.settle_seconds is not None
    assert report.kills["restate-server"] >= 3
    assert report.kills["service"] >= 1
    assert report.most_nodes_down == 1
    assert len(report.calls) >= 500
