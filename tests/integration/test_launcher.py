"""The launcher kills only children of its own supervisor, and its stack does not outlive it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from payments.config import Part
from payments.tools.launcher import LaunchedStack


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

    assert stack.kill(Part.SERVICE) == child
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
            stack.kill(Part.SERVICE)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_kill_everything_spares_a_pid_that_is_not_a_child_of_the_supervisor(
    supervisor: tuple[LaunchedStack, int],
) -> None:
    stack, child = supervisor
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        stack.settings.pid_file("service").write_text(f"{stranger.pid}\n")
        stack.settings.pid_file("restate-server").write_text(f"{child}\n")
        watched = psutil.Process(child)  # before the kill: once reaped, its pid names nothing

        stack.kill_everything()

        _, alive = psutil.wait_procs([watched], timeout=5)
        assert alive == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


LAUNCH_AND_HANG = """
import sys, time
from pathlib import Path
from payments.tools.launcher import LaunchedStack
stack = LaunchedStack(Path(sys.argv[1]))
stack.start()
print(stack.process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="children die with their parent on Linux only")
def test_a_killed_test_run_leaves_no_stack_behind(tmp_path: Path) -> None:
    test_run = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_AND_HANG, str(tmp_path / "data")], stdout=subprocess.PIPE, text=True
    )
    assert test_run.stdout is not None
    started = test_run.stdout.readline()
    assert started, "the launcher did not start its stack (its error is above)"
    supervisor = psutil.Process(int(started))
    stack = [supervisor, *supervisor.children(recursive=True)]
    try:
        assert len(stack) >= 3  # payments up, restate-server, the service

        test_run.send_signal(signal.SIGKILL)
        test_run.wait()

        _, alive = psutil.wait_procs(stack, timeout=30)
        assert alive == []
    finally:
        for process in stack:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        test_run.stdout.close()
