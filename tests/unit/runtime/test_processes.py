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


def test_a_free_port_block_is_consecutive_and_not_taken_twice() -> None:
    taken: set[int] = set()
    first = free_port_block(3, taken)
    second = free_port_block(3, taken)

    assert taken == {first, first + 1, first + 2, second, second + 1, second + 2}


@pytest.fixture
def ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> collections.abc.Iterator[Path]:
    """A file to write the kernel's ephemeral range in, read instead of the kernel's."""
    ephemeral = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(processes, "_EPHEMERAL_PORTS", ephemeral)
    processes._listening_ports.cache_clear()
    yield ephemeral
    processes._listening_ports.cache_clear()


@pytest.mark.parametrize(
    ("ephemeral", "ports"),
    [
        ("10002\t65533\n", [10_000, 10_001, 65_534, 65_535]),
        ("32768\t60999\n", [*range(10_000, 32_768), *range(61_000, 65_536)]),
        ("10000\t65535\n", list(range(1_024, 10_000))),
        ("1024\t65535\n", list(range(1_024, 65_536))),  # nothing is outside: any port will have to do
        ("1024\t9999\n", list(range(10_000, 65_536))),
    ],
    ids=["narrow", "linux-default", "all-from-10000", "everything", "below-10000"],
)
def test_the_ports_we_listen_on(ephemeral_range: Path, ephemeral: str, ports: list[int]) -> None:
    ephemeral_range.write_text(ephemeral)

    assert list(processes._listening_ports()) == ports


def test_a_block_of_free_ports_never_spans_the_ephemeral_range(ephemeral_range: Path) -> None:
    ephemeral_range.write_text("10002\t65533\n")

    assert {free_port_block(2, set()) for _ in range(50)} <= {10_000, 65_534}


def test_no_free_block_is_an_error_naming_the_ports_not_a_loop(ephemeral_range: Path) -> None:
    ephemeral_range.write_text("10002\t65533\n")

    with pytest.raises(RuntimeError, match="no 3 consecutive free ports among 10000-65535"):
        free_port_block(3, set())
