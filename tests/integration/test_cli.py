"""The `payments` command against a running stack, and without one."""

from __future__ import annotations

import json
import subprocess

import pytest

from payments.runtime.processes import free_port
from payments.tools.launcher import LaunchedStack, free_ports
from tests.helpers import payments_cli

HOSTILE = "x/../../payments/VICTIM/cancelPayment#"
"""Sent unescaped, it became ``POST /payments/VICTIM/cancelPayment``: a refund of VICTIM's payment."""
COMMANDS = ["up", "pay", "cancel", "status", "deposit", "balance", "chaos", "bench"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    result = payments_cli(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: payments" in result.stdout


def test_without_a_stack_it_says_so_in_one_line() -> None:
    result = payments_cli("balance", "abc", "--ingress-port", str(free_port()))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "not running" in result.stderr


def test_commands_against_a_running_stack(stack: LaunchedStack, unique: str) -> None:
    port = ["--ingress-port", str(stack.settings.ingress_port)]

    def answer(*args: str) -> dict[str, object]:
        result = payments_cli(*args, *port)
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

    refused = payments_cli("pay", f"{unique}-q", "--account", f"{unique}-a", "--amount", "0", *port)
    assert refused.returncode == 1
    assert refused.stderr.startswith("payments: 400 amount:")


def refused_in_one_line(result: subprocess.CompletedProcess[str], field: str) -> bool:
    return (
        result.returncode == 2
        and result.stdout == ""
        and len(result.stderr.splitlines()) == 1
        and result.stderr.startswith(f"payments: {field}: ")
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["status", HOSTILE], "paymentId"),
        (["cancel", HOSTILE], "paymentId"),
        (["pay", HOSTILE, "--account", "abc", "--amount", "1"], "paymentId"),
        (["pay", "p1", "--account", HOSTILE, "--amount", "1"], "accountId"),
        (["deposit", HOSTILE, "5"], "accountId"),
        (["deposit", "abc", "5", "--idempotency-key", "\n"], "idempotency-key"),
        (["balance", HOSTILE], "accountId"),
    ],
    ids=["status", "cancel", "pay", "pay --account", "deposit", "deposit --idempotency-key", "balance"],
)
def test_an_id_the_service_would_refuse_is_a_one_line_usage_error(args: list[str], field: str) -> None:
    # No stack at this port: the refusal comes before anything is sent.
    result = payments_cli(*args, "--ingress-port", str(free_port()))
    assert refused_in_one_line(result, field), result


def test_a_hostile_id_cannot_cancel_another_payment(stack: LaunchedStack, unique: str) -> None:
    port = ["--ingress-port", str(stack.settings.ingress_port)]
    account = f"{unique}-a"
    assert payments_cli("pay", "VICTIM", "--account", account, "--amount", "10", *port).returncode == 0

    assert refused_in_one_line(payments_cli("status", HOSTILE, *port), "paymentId")
    assert refused_in_one_line(payments_cli("balance", HOSTILE, *port), "accountId")

    victim = json.loads(payments_cli("status", "VICTIM", *port).stdout)
    assert (victim["state"], victim["accountId"]) == ("COMPLETED", account)
    assert json.loads(payments_cli("balance", account, *port).stdout)["balance"] == 100_000 - 10


def test_a_second_up_on_the_same_data_refuses_and_leaves_the_first_alone(stack: LaunchedStack) -> None:
    data_dir = stack.settings.data_dir
    kept = [stack.settings.ready_file, *data_dir.glob("*.toml"), *data_dir.glob("*.pid")]
    untouched = {path: path.read_bytes() for path in kept}
    ports = free_ports()

    result = payments_cli(
        "up",
        "--data-dir",
        str(data_dir),
        *("--ingress-port", str(ports["ingress_port"]), "--admin-port", str(ports["admin_port"])),
        *("--node-port", str(ports["node_port"]), "--service-port", str(ports["service_port"])),
    )

    assert result.returncode == 1
    assert f"another `payments up` is using {data_dir}" in result.stderr
    assert {path: path.read_bytes() for path in untouched} == untouched
