"""Starting and stopping child processes so that none outlives the stack."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
# Loaded once here, not in each child: a dlopen between fork and exec can deadlock a threaded parent's child.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with(parent: int) -> Callable[[], None]:
    def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
        """Ask Linux to SIGKILL the child when its parent dies, even by SIGKILL."""
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)

    return die_with_parent


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], log: IO[bytes], cwd: Path | None = None
) -> asyncio.subprocess.Process:
    """Start a child process that dies with its parent.

    It runs in its own session, so that a Ctrl-C in the terminal reaches only the supervisor, which
    then stops the children in order.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )


async def terminate(process: asyncio.subprocess.Process, grace_seconds: float) -> None:
    """SIGTERM the process, and SIGKILL it if it is still there after ``grace_seconds``."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_block(count: int, taken: set[int], host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free TCP ports, none of them in ``taken``, which gets them all."""
    while True:
        first = free_port(host)
        block = set(range(first, first + count))
        if first + count <= 65536 and not block & taken and all(_can_bind(host, port) for port in block):
            taken |= block
            return first


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'signal SIGKILL', for a process that has ended."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:  # a real-time signal has no name
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def write_pid(path: Path, pid: int) -> None:
    """Record a pid where users (and tests) can find it, never as a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{pid}\n")
    partial.replace(path)
