"""The launcher's kill hits only children of its own supervisor, never a process that took a dead pid."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from payments.launcher import LaunchedStack


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[LaunchedStack, int]]:
    """A stand-in for ``payments up``: a shell with one child; the launcher knows only the shell."""
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    assert shell.stdout is not None
    child = int(shell.stdout.readline())
    stack = LaunchedStack(tmp_path)
    stack.process = shell  # type: ignore[assignment]  # text mode; only its pid matters here
    yield stack, child
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(child).kill()
    shell.wait(timeout=10)
    shell.stdout.close()


def test_kill_hits_the_child_named_in_the_pid_file(supervisor: tuple[LaunchedStack, int]) -> None:
    stack, child = supervisor
    stack.settings.pid_file("service").write_text(f"{child}\n")

    assert stack.kill("service") == child
    _, alive = psutil.wait_procs([psutil.Process(child)], timeout=5)
    assert alive == []


def test_kill_refuses_a_pid_that_is_not_a_child_of_the_supervisor(
    supervisor: tuple[LaunchedStack, int],
) -> None:
    stack, _ = supervisor
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        stack.settings.pid_file("service").write_text(f"{stranger.pid}\n")
        with pytest.raises(ProcessLookupError, match="not running"):
            stack.kill("service")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
