"""``payments up`` in a child process on free ports: what the tests, chaos runs and benchmarks use.

The stack under test is the one users run, supervisor included, so a test that kills the service
sees the same restart a user would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

import psutil

from payments.config import Part, Settings
from payments.runtime import health, postgres
from payments.runtime.processes import describe_exit, die_with_parent, free_port_block

READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0


class Ports(TypedDict):
    """Every port of a stack, as ``Settings`` takes them."""

    ingress_port: int
    admin_port: int
    node_port: int
    service_port: int
    database_port: int
    console_port: int


def free_ports(nodes: int = 1) -> Ports:
    """Ports for a stack of ``nodes`` restate-server nodes, free now and none of them twice."""
    taken: set[int] = set()
    return Ports(
        ingress_port=free_port_block(nodes, taken),
        admin_port=free_port_block(nodes, taken),
        node_port=free_port_block(nodes, taken),
        service_port=free_port_block(1, taken),
        database_port=free_port_block(1, taken),
        console_port=free_port_block(1, taken),
    )


class LaunchError(RuntimeError):
    """The stack did not come up, or did not go down, in time."""


class _Launched:
    """Started on entering a ``with`` block, stopped on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LaunchedStack(_Launched):
    """A running ``payments up`` on its own ports and data directory."""

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None, nodes: int = 1) -> None:
        """Prepare a stack of ``nodes`` restate-server nodes in ``data_dir``.

        ``env`` holds ``PAYMENTS_*`` and ``RESTATE_*`` variables, which win over this process's own;
        the ports and the data directory are always the stack's own.
        """
        self.extra_env = dict(env or {})
        self.settings = Settings.from_env(
            {**os.environ, **self.extra_env}, data_dir=data_dir, nodes=nodes, **free_ports(nodes)
        )
        self.log_path = data_dir / "payments-up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``payments up`` and wait until the service answers through Restate.

        A stack started from a thread stops when that thread ends: start it from the main thread.
        """
        self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env, **self.settings.to_env()}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "payments.cli", "up", "--nodes", str(self.settings.nodes)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # SIGTERM, not SIGKILL: a test run that is killed leaves no stack holding ports and the lock.
                preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - one prctl call, no lock taken
            )
        try:
            self._wait_started()
        except BaseException:
            # The context manager's exit does not run when entering fails: stop what did start.
            with contextlib.suppress(LaunchError):
                self.stop()
            raise

    def _wait_started(self) -> None:
        """Wait until ``payments up`` has written its pid to the ready file: everything serves."""
        ready_file, process = self.settings.ready_file, self.process

        async def started() -> bool:
            with contextlib.suppress(FileNotFoundError):
                return process is not None and ready_file.read_text().strip() == str(process.pid)
            return False

        async def wait() -> None:
            try:
                await health.wait_until(
                    started, exited=exited(process), seconds=READY_TIMEOUT_SECONDS, what="payments up"
                )
            except health.NotReadyError as error:
                raise LaunchError(f"{error}:\n{self.log_tail()}") from None

        _blocking(wait())

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until restate-server and the service both answer."""
        wait_ready(self.settings, self.process, self.log_path, timeout)

    def stop(self) -> None:
        """Send SIGTERM to ``payments up`` and wait until it has stopped everything."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill_everything()
            raise LaunchError(f"payments up did not stop in time:\n{self.log_tail()}") from None

    def kill_everything(self) -> None:
        """SIGKILL the supervisor and its children: the last resort of a test that failed."""
        for label in (
            Part.CONSOLE,
            Part.SERVICE,
            Part.DATABASE,
            *(node.label for node in self.settings.restate_nodes),
        ):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                os.kill(self._child(label), signal.SIGKILL)
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def label(self, part: Part, node: int = 1) -> str:
        """The name of a part's (for restate-server, node ``node``'s) pid and log files."""
        return self.settings.restate_nodes[node - 1].label if part == Part.RESTATE_SERVER else part

    def pid(self, part: Part, node: int = 1) -> int:
        """The pid of a running part (restate-server: node ``node``), from the supervisor's pid file."""
        return int(self.settings.pid_file(self.label(part, node)).read_text())

    def kill(self, part: Part, node: int = 1) -> int:
        """SIGKILL a part (restate-server: node ``node``), as a crash would; the supervisor restarts it.

        Raises ProcessLookupError when the pid file names no child of the supervisor: between a
        crash and the restart it names a dead process, whose pid another process may have taken.
        """
        pid = self._child(self.label(part, node))
        os.kill(pid, signal.SIGKILL)
        return pid

    def _child(self, label: str) -> int:
        """The pid in ``label``'s pid file; ProcessLookupError unless it is a child of our supervisor."""
        pid = int(self.settings.pid_file(label).read_text())
        try:
            ours = self.process is not None and psutil.Process(pid).ppid() == self.process.pid
        except psutil.NoSuchProcess:
            ours = False
        if not ours:
            raise ProcessLookupError(f"{label} (pid {pid}) is not running")
        return pid

    def log_tail(self) -> str:
        """The end of the supervisor's log, for error messages."""
        return log_tail(self.log_path)


class LaunchedDatabase(_Launched):
    """The embedded PostgreSQL alone, as ``payments up`` runs it, on a free port: for the ledger's tests.

    The cluster is made in ``data_dir`` on the first start and reused by the next ones.
    """

    def __init__(self, data_dir: Path) -> None:
        self.settings = Settings(data_dir=data_dir, database_port=free_port_block(1, set()))
        self.log_path = data_dir / "logs" / f"{Part.DATABASE}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the ledger connects: through the socket, as the superuser ``payments``."""
        return self.settings.admin_ledger_url

    def start(self) -> None:
        """Create the cluster if need be, start the server and wait until it answers."""
        settings = self.settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path.parent.mkdir(mode=0o700, exist_ok=True)
        user = postgres.server_user()
        postgres.prepare(settings, user)
        uid, gid = user.ids or (None, None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                postgres.argv(settings, user),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - one prctl call, no lock taken
                user=uid,
                group=gid,
                extra_groups=None if uid is None else [],
            )
        try:
            _blocking(
                health.wait_until(
                    lambda: health.database_answers(self.url),
                    exited=exited(self.process),
                    seconds=READY_TIMEOUT_SECONDS,
                    what=Part.DATABASE,
                )
            )
        except health.NotReadyError as error:
            self.stop()
            raise LaunchError(f"{error}:\n{log_tail(self.log_path)}") from None

    def stop(self) -> None:
        """Stop the server with a fast shutdown (SIGINT), SIGKILL after a grace period."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_ready(
    settings: Settings,
    process: subprocess.Popen[bytes] | None,
    log_path: Path,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Wait until every node of the stack of ``settings``, started by ``process``, answers through Restate.

    For a stack that was up and lost a process: ``payments up`` restarts it without a word.
    """
    _blocking(_wait_ready(settings, process, log_path, timeout))


async def _wait_ready(
    settings: Settings, process: subprocess.Popen[bytes] | None, log_path: Path, seconds: float
) -> None:
    urls = [settings.service_health_url]
    for node in settings.restate_nodes:
        urls += health.node_ready_urls(node)
    process_exited = exited(process)
    try:
        await health.wait_until_answers(urls, exited=process_exited, seconds=seconds, what="the stack")
        if not settings.database_url:  # the embedded PostgreSQL, which the service may outlive
            await health.wait_until(
                lambda: health.database_answers(settings.ledger_url),
                exited=process_exited,
                seconds=seconds,
                what=Part.DATABASE,
            )
        if settings.nodes > 1:
            await health.wait_until_every_partition_answers(
                settings.ingress_urls, settings.partitions, exited=process_exited, seconds=seconds
            )
    except health.NotReadyError as error:
        raise LaunchError(f"{error}; see {log_path}:\n{log_tail(log_path)}") from None


def exited(process: subprocess.Popen[bytes] | None) -> health.Exited:
    """How :mod:`payments.runtime.health`'s waits learn that ``process`` ended."""

    def status() -> str | None:
        returncode = None if process is None else process.poll()
        return None if returncode is None else describe_exit(returncode)

    return status


def _blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` to its end in a thread of its own: callers inside an event loop can wait too."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, coroutine).result()


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages."""
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
