"""Small pieces of process management."""

from __future__ import annotations

import collections.abc
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from payments.runtime import processes
from payments.runtime.processes import describe_exit, free_port, free_port_block, terminate_popen, write_pid


@pytest.mark.parametrize(
    ("returncode", "described"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (-signal.SIGKILL, "signal SIGKILL"),
        (-(signal.SIGRTMIN + 2), f"signal {signal.SIGRTMIN + 2}"),
    ],
    ids=["ok", "failed", "killed", "real-time-signal"],
)
def test_describe_exit(returncode: int, described: str) -> None:
    assert describe_exit(returncode) == described


def test_write_pid_replaces_the_file_whole(tmp_path: Path) -> None:
    pid_file = tmp_path / "service.pid"
    write_pid(pid_file, 123)
    write_pid(pid_file, 45)

    assert pid_file.read_text() == "45\n"
    assert [path.name for path in tmp_path.iterdir()] == ["service.pid"]


def test_write_pid_makes_the_file_private_even_over_a_leftover_partial(tmp_path: Path) -> None:
    leftover = tmp_path / ".ready.partial"
    leftover.write_text("999\n")
    leftover.chmod(0o644)

    write_pid(tmp_path / "ready", 45)

    assert stat.S_IMODE((tmp_path / "ready").stat().st_mode) == 0o600


def test_terminate_popen_kills_a_process_that_ignores_sigterm() -> None:
    ignore_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True)"
    stubborn = subprocess.Popen(
        [sys.executable, "-c", f"{ignore_sigterm}; time.sleep(60)"], stdout=subprocess.PIPE
    )
    try:
        assert stubborn.stdout is not None
        stubborn.stdout.readline()  # SIGTERM is ignored from here on

        terminate_popen(stubborn, grace_seconds=0.5)

        assert stubborn.returncode == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()
        assert stubborn.stdout is not None
        stubborn.stdout.close()


def ephemeral_ports() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_free_ports_are_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    # A connection going out can take a port of that range between our check and the server's bind.
    taken: set[int] = set()
    firsts = [free_port_block(3, taken) for _ in range(100)] + [free_port() for _ in range(100)]

    assert not set(firsts) & set(ephemeral_ports())
    assert not taken & set(ephemeral_ports())
    assert len(taken) == 300  # blocks of three consecutive ports, none given twice
    assert all({first, first + 1, first + 2} <= taken for first in firsts[:100])


@pytest.fixture
def narrow_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> collections.abc.Iterator[None]:
    """Only 10000-10001 and 65534-65535 lie outside this ephemeral range."""
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("10002\t65533\n")
    monkeypatch.setattr(processes, "_EPHEMERAL_PORTS", ephemeral)
    processes._listening_ports.cache_clear()
    yield
    processes._listening_ports.cache_clear()


@pytest.mark.usefixtures("narrow_ports")
def test_a_block_of_free_ports_never_spans_the_ephemeral_range() -> None:
    assert {free_port_block(2, set()) for _ in range(50)} <= {10_000, 65_534}
