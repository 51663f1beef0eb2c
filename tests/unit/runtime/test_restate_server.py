"""restate-server's configuration: one node as before, and the nodes of a cluster that forms one."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from payments.config import Settings
from payments.runtime import restate_server
from payments.runtime.supervisor import StackError, check_data_layout


def parsed(settings: Settings, index: int = 1) -> dict[str, Any]:
    node = settings.restate_nodes[index - 1]
    return tomllib.loads(restate_server.config_toml(settings, node))


def test_a_single_node_keeps_its_name_and_base_dir_and_has_no_cluster_keys() -> None:
    settings = Settings(data_dir=Path("/data"))
    config = tomllib.loads(restate_server.config_toml(settings))

    assert config["node-name"] == "payments-node"
    assert {"cluster-name", "auto-provision", "default-replication", "metadata-client"}.isdisjoint(config)
    assert config["bifrost"]["default-provider"] == "local"
    assert config["default-num-partitions"] == 1
    assert (config["bind-port"], config["admin"]["bind-port"], config["ingress"]["bind-port"]) == (
        5122,
        9070,
        8080,
    )
    assert config["advertised-address"] == "http://127.0.0.1:5122/"
    assert (
        config["worker"]["invoker"]["request-identity-private-key-pem-file"] == "/data/identity/private.pem"
    )
    assert restate_server.config_toml(settings) == restate_server.config_toml(
        settings, settings.restate_nodes[0]
    )
    assert restate_server.base_dir(settings) == Path("/data/restate")
    assert restate_server.argv(settings, Path("/c.toml"))[-2:] == ["--base-dir", "/data/restate"]


def test_cluster_nodes_share_a_cluster_that_only_node_one_provisions() -> None:
    settings = Settings(nodes=3, data_dir=Path("/data"))
    configs = [parsed(settings, index) for index in (1, 2, 3)]

    assert [config["node-name"] for config in configs] == [
        "payments-node-1",
        "payments-node-2",
        "payments-node-3",
    ]
    assert {config["cluster-name"] for config in configs} == {"payments-cluster"}
    assert [config["auto-provision"] for config in configs] == [True, False, False]
    assert {config["default-replication"] for config in configs} == {2}
    assert {config["bifrost"]["default-provider"] for config in configs} == {"replicated"}
    peers = ["http://127.0.0.1:5122/", "http://127.0.0.1:5123/", "http://127.0.0.1:5124/"]
    assert all(config["metadata-client"]["addresses"] == peers for config in configs)
    assert [config["advertised-address"] for config in configs] == peers
    ports = [
        port
        for config in configs
        for port in (config["bind-port"], config["admin"]["bind-port"], config["ingress"]["bind-port"])
    ]
    assert len(set(ports)) == 9
    assert [restate_server.base_dir(settings, node).name for node in settings.restate_nodes] == [
        "restate-1",
        "restate-2",
        "restate-3",
    ]


def test_the_partition_count_comes_from_the_settings() -> None:
    assert parsed(Settings(partitions=8))["default-num-partitions"] == 8
    assert {
        parsed(Settings(nodes=3, partitions=6), index)["default-num-partitions"] for index in (1, 2, 3)
    } == {6}


def test_every_node_keeps_the_memory_bounds_and_the_signing_key() -> None:
    single = parsed(Settings())
    for index in (1, 2, 3):
        config = parsed(Settings(nodes=3), index)
        for key in ("rocksdb-total-memory-size", "default-num-partitions", "default-journal-retention"):
            assert config[key] == single[key]
        assert config["worker"]["invoker"] == single["worker"]["invoker"]
        assert config["bifrost"]["record-cache-memory-size"] == single["bifrost"]["record-cache-memory-size"]


@pytest.mark.parametrize(
    ("existing", "nodes", "refused"),
    [
        ([], 1, False),
        ([], 3, False),
        (["restate", "logs", "identity"], 1, False),
        (["restate-1", "restate-2", "restate-3", "logs"], 3, False),
        (["restate-1"], 3, False),  # a first start cut short
        (["restate"], 3, True),
        (["restate-1", "restate-2", "restate-3"], 1, True),
        (["restate-1", "restate-2", "restate-3", "restate-4", "restate-5"], 3, True),
    ],
)
def test_data_of_another_number_of_nodes_is_refused(
    tmp_path: Path, existing: list[str], nodes: int, refused: bool
) -> None:
    for name in existing:
        (tmp_path / name).mkdir()
    (tmp_path / "restate-server.toml").write_text("")  # a file is not a node's data
    settings = Settings(data_dir=tmp_path, nodes=nodes)

    if refused:
        with pytest.raises(StackError, match="forget every payment"):
            check_data_layout(settings)
    else:
        check_data_layout(settings)
