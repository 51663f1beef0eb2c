"""The `payments` command against a running stack, and without one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from payments.launcher import LaunchedStack
from payments.processes import free_port

COMMANDS = ["up", "pay", "cancel", "status", "deposit", "balance", "chaos", "bench"]


def payments(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payments.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    result = payments(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: payments" in result.stdout


def test_without_a_stack_it_says_so_in_one_line() -> None:
    result = payments("balance", "abc", "--ingress-port", str(free_port()))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "not running" in result.stderr


def test_commands_against_a_running_stack(stack: LaunchedStack, unique: str) -> None:
    port = ["--ingress-port", str(stack.settings.ingress_port)]

    def answer(*args: str) -> dict[str, object]:
        result = payments(*args, *port)
        assert result.returncode == 0, result.stderr
        parsed: dict[str, object] = json.loads(result.stdout)
        return parsed

    assert (
        answer("pay", f"{unique}-p", "--account", f"{unique}-a", "--amount", "10")["outcome"] == "completed"
    )
    assert answer("status", f"{unique}-p")["state"] == "COMPLETED"
    assert answer("cancel", f"{unique}-p")["outcome"] == "refunded"
    assert answer("deposit", f"{unique}-a", "5", "--idempotency-key", f"{unique}-k")["balance"] == 100_005
    assert answer("balance", f"{unique}-a")["balance"] == 100_005

    refused = payments("pay", f"{unique}-q", "--account", "no spaces", "--amount", "1", *port)
    assert refused.returncode == 1
    assert refused.stderr.startswith("payments: 400 accountId:")


def test_a_second_up_on_the_same_data_refuses_and_leaves_the_first_alone(stack: LaunchedStack) -> None:
    data_dir = stack.settings.data_dir
    kept = [stack.settings.ready_file, *data_dir.glob("*.toml"), *data_dir.glob("*.pid")]
    untouched = {path: path.read_bytes() for path in kept}
    ports = [str(free_port()) for _ in range(4)]

    result = payments(
        "up",
        "--data-dir",
        str(data_dir),
        *("--ingress-port", ports[0], "--admin-port", ports[1]),
        *("--node-port", ports[2], "--service-port", ports[3]),
    )

    assert result.returncode == 1
    assert f"another `payments up` is using {data_dir}" in result.stderr
    assert {path: path.read_bytes() for path in untouched} == untouched
