"""The restate-server binary pinned in package.json: where it is and how it is configured."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from payments.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BINARY_ENV = "PAYMENTS_RESTATE_SERVER_BIN"
NODE_NAME = "payments-node"
_PLATFORMS = {
    ("Linux", "x86_64"): "linux-x64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-x64",
    ("Darwin", "arm64"): "darwin-arm64",
}


def binary() -> Path:
    """The real restate-server executable.

    Not the Node wrapper in node_modules/.bin: killing the wrapper leaves the server running.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override)
    suffix = _PLATFORMS.get((platform.system(), platform.machine()), "linux-x64")
    path = PROJECT_ROOT / "node_modules" / "@restatedev" / f"restate-server-{suffix}" / "bin"
    return path / "restate-server"


def base_dir(settings: Settings) -> Path:
    """Where restate-server keeps its log, state and metadata."""
    return settings.data_dir / "restate"


def config_toml(settings: Settings, signing_key: Path) -> str:
    """The configuration file of a single-node server for these settings.

    Values in ``RESTATE_*`` environment variables still win over it, which is how the tests turn
    the invoker's inactivity timeout down to zero. restate-server signs its requests to the
    service with ``signing_key``.
    """
    return f"""\
node-name = "{NODE_NAME}"
listen-mode = "tcp"
bind-ip = "{settings.host}"
bind-port = {settings.node_port}
advertised-address = "http://{settings.host}:{settings.node_port}/"
disable-telemetry = true
shutdown-timeout = "5s"
log-format = "compact"
log-disable-ansi-codes = true

[admin]
bind-port = {settings.admin_port}

[ingress]
bind-port = {settings.ingress_port}
request-size-limit = "64 KiB"

[worker.invoker]
request-identity-private-key-pem-file = {json.dumps(str(signing_key.resolve()))}
"""


def argv(settings: Settings, config_file: Path) -> list[str]:
    """The command line that starts the server."""
    return [
        str(binary()),
        "--no-logo",
        "--config-file",
        str(config_file),
        "--base-dir",
        str(base_dir(settings)),
    ]
