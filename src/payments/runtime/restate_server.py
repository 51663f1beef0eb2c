"""The restate-server binary pinned in package.json: where it is and how it is configured."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

from payments.config import Node, Settings

NODE_NAME = "payments-node"
CLUSTER_NAME = "payments-cluster"
_PLATFORMS = {
    ("Linux", "x86_64"): "linux-x64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-x64",
    ("Darwin", "arm64"): "darwin-arm64",
}


class BinaryNotFoundError(FileNotFoundError):
    """No restate-server executable where :func:`binary` looks."""


def binary(settings: Settings) -> Path:
    """The real restate-server executable: the configured one, else the one npm installed, else PATH's.

    npm's is looked for the way Node resolves packages, in ``node_modules`` of the current directory
    and each one above it, then of this package's directory and those above it (an editable install
    in a checkout). Never the Node wrapper in node_modules/.bin: killing it leaves the server running.
    """
    if settings.restate_server_bin:
        return Path(settings.restate_server_bin)
    suffix = _PLATFORMS.get((platform.system(), platform.machine()), "linux-x64")
    relative = Path("node_modules", "@restatedev", f"restate-server-{suffix}", "bin", "restate-server")
    here = Path(__file__).resolve().parent
    for directory in (Path.cwd(), *Path.cwd().parents, here, *here.parents):
        if (directory / relative).is_file():
            return directory / relative
    on_path = shutil.which("restate-server")
    if on_path is None:
        raise BinaryNotFoundError(
            "restate-server not found: `make setup` installs it (npm ci), or set PAYMENTS_RESTATE_SERVER_BIN"
        )
    return Path(on_path)


def base_dir(settings: Settings, node: Node | None = None) -> Path:
    """Where restate-server ``node`` (by default the first) keeps its log, state and metadata."""
    node = node or settings.restate_nodes[0]
    return settings.data_dir / (f"restate-{node.index}" if node.clustered else "restate")


def node_name(node: Node) -> str:
    """The node's name in Restate's metadata; a single node keeps the name its data was created with."""
    return f"{NODE_NAME}-{node.index}" if node.clustered else NODE_NAME


def config_toml(settings: Settings, node: Node | None = None) -> str:
    """The configuration file of restate-server ``node`` (by default the first) for these settings.

    Values in ``RESTATE_*`` environment variables still win over it, which is how the tests turn
    the invoker's inactivity timeout down to zero. restate-server signs its requests to the
    service with the stack's signing key. The nodes of a cluster differ only in their name, ports and
    whether they provision it.
    """
    node = node or settings.restate_nodes[0]
    cluster = cluster_tables = ""
    # A single node keeps its log in its own RocksDB: about 1 ms less per payment than the replicated
    # loglet talking to the log server in the same process (docs/performance.md). An existing data
    # directory moves over by itself: Restate seals the old log segment and starts a local one.
    log_provider = "local"
    if node.clustered:
        peers = ", ".join(f'"{peer.address}"' for peer in settings.restate_nodes)
        # Only node 1 provisions: nodes that all auto-provision each become a one-node cluster.
        cluster = f"""\
cluster-name = "{CLUSTER_NAME}"
auto-provision = {"true" if node.index == 1 else "false"}
default-replication = {settings.replication}
"""
        log_provider = "replicated"
        cluster_tables = f"""
[metadata-client]
addresses = [{peers}]
"""
    return f"""\
node-name = "{node_name(node)}"
{cluster}listen-mode = "tcp"
bind-ip = "{settings.host}"
bind-port = {node.node_port}
advertised-address = "{node.address}"
disable-telemetry = true
shutdown-timeout = "5s"
log-format = "compact"
log-disable-ansi-codes = true
# Sized for a small machine (docs/performance.md): fewer partitions batch more per log write, and a
# completed invocation's journal is not kept (idempotency keys keep their own retention).
default-num-partitions = {settings.partitions}
default-journal-retention = "0s"
# Memory bounds: with the defaults restate-server grows past 900 MiB under load. RocksDB's caches
# and memtables are shared by every partition, the log and the metadata store.
rocksdb-total-memory-size = "256 MiB"

[admin]
bind-port = {node.admin_port}

[admin.query-engine]
memory-size = "64 MiB"

[ingress]
bind-port = {node.ingress_port}
request-size-limit = "64 KiB"

[bifrost]
default-provider = "{log_provider}"
record-cache-memory-size = "32 MiB"

[worker.invoker]
request-identity-private-key-pem-file = {json.dumps(str(settings.signing_key.resolve()))}
memory-limit = "256 MiB"
{cluster_tables}"""


def argv(settings: Settings, config_file: Path, node: Node | None = None) -> list[str]:
    """The command line that starts restate-server ``node`` (by default the first)."""
    return [
        str(binary(settings)),
        "--no-logo",
        "--config-file",
        str(config_file),
        "--base-dir",
        str(base_dir(settings, node)),
    ]
