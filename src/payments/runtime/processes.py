"""Starting and stopping child processes so that none outlives the stack."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
# Loaded once here, not in each child: a dlopen between fork and exec can deadlock a threaded parent's child.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent(signum: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` that asks Linux to send ``signum`` to the child when its parent dies, even by SIGKILL.

    The "parent" is the thread that starts the child: start it from one that lives as long as it should.
    """
    parent = os.getpid()

    def request() -> None:  # pragma: no cover - runs in the child between fork and exec
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signum)
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)

    return request


async def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    log: IO[bytes],
    cwd: Path | None = None,
    as_ids: tuple[int, int] | None = None,
) -> asyncio.subprocess.Process:
    """Start a child process that dies with its parent, as the user and group ``as_ids`` if given.

    It runs in its own session, so that a Ctrl-C in the terminal reaches only the supervisor, which
    then stops the children in order.
    """
    uid, gid = as_ids or (None, None)
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        # Python switches the user before it runs preexec_fn: the death signal survives the switch.
        preexec_fn=die_with_parent(signal.SIGKILL),
        user=uid,
        group=gid,
        extra_groups=None if uid is None else [],
    )


async def terminate(
    process: asyncio.subprocess.Process, grace_seconds: float, signum: signal.Signals = signal.SIGTERM
) -> None:
    """Send ``signum`` to the process, and SIGKILL it if it is still there after ``grace_seconds``."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def terminate_popen(process: subprocess.Popen[Any], grace_seconds: float) -> None:
    """:func:`terminate` for a process started with :mod:`subprocess`, outside an event loop."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing uses now, and that no connection going out takes before we bind it."""
    return free_port_block(1, set(), host)


def free_port_block(count: int, taken: set[int], host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free TCP ports, none of them in ``taken``, which gets them all."""
    ports = _listening_ports()
    tries = _TRIES if count <= len(ports) else 0
    for _ in range(tries):
        start = random.randrange(len(ports) - count + 1)  # noqa: S311 - a port needs no secrecy
        first, last = ports[start], ports[start + count - 1]
        block = set(range(first, first + count))
        # Sorted and without repeats, so the block is consecutive (not across the ephemeral range) when
        # its last port is where a consecutive one would be.
        if last == first + count - 1 and not block & taken and all(_can_bind(host, port) for port in block):
            taken |= block
            return first
    raise RuntimeError(f"found no {count} consecutive free ports among {ports[0]}-{ports[-1]}")


_TRIES = 1_000
_EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


@functools.cache
def _listening_ports() -> tuple[int, ...]:
    """The ports our servers may listen on: outside the range the kernel draws outgoing ports from.

    A port from that range, free when we check it, can become the local port of any connection going out
    (the service's pool to PostgreSQL, a node dialing another) before the server binds it, or while the
    server is down between a kill and its restart; a listener cannot bind a port that a live connection
    holds, so restate-server then exits at start for as long as that connection lives.
    """
    try:
        low, high = map(int, _EPHEMERAL_PORTS.read_text().split())
    except (OSError, ValueError):  # not Linux: a range that covers Linux's and the BSDs' defaults
        low, high = 32_768, 65_535
    # From 10000 up, clear of the well-known services and of what other programs default to, unless the
    # ephemeral range leaves nothing there; when it covers every port, the risk above cannot be avoided.
    for lowest in (10_000, 1_024):
        ports = (*range(lowest, min(low, 65_536)), *range(max(high + 1, lowest), 65_536))
        if ports:
            return ports
    return tuple(range(1_024, 65_536))


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
    write_whole(path, f"{pid}\n".encode())


def write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only, so that a crash leaves the old file or the new one.

    Both the data and the rename are on disk when it returns: a file that is there is complete.
    """
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)  # left by a crash; O_EXCL below must create the file with our mode
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
