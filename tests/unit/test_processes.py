"""Small pieces of process management that need no running process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from payments.processes import describe_exit, write_pid


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
