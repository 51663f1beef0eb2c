"""Small pieces of process management."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from payments.runtime.processes import describe_exit, terminate_popen, write_pid


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
