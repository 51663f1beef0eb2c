"""The supervisor behind ``payments up``: restate-server and the service, kept running together.

It starts restate-server, waits until it is healthy, starts the service, registers the deployment,
and then restarts whichever of the two dies, until SIGINT or SIGTERM stops both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from payments import identity, processes, restate_server
from payments.admin import Admin
from payments.config import Settings

STOP_GRACE_SECONDS = 5.0
START_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
STABLE_AFTER_SECONDS = 10.0
"""A child that ran this long before dying is restarted without waiting."""

Say = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot start; the message says why in one line."""


def say_to_stderr(line: str) -> None:
    """Print one line of the supervisor's narration."""
    print(f"payments: {line}", file=sys.stderr, flush=True)


@dataclass
class Child:
    """One supervised process, with what it takes to start it and to know it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], Awaitable[bool]]
    pid_file: Path
    log: IO[bytes]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)

    async def start(self) -> None:
        """Start the process and wait until it is ready."""
        self.process = await processes.spawn(self.argv, self.env, self.log)
        self.started_at = time.monotonic()
        processes.write_pid(self.pid_file, self.process.pid)
        deadline = self.started_at + START_TIMEOUT_SECONDS
        while not await self.ready():
            if self.process.returncode is not None:
                raise StackError(
                    f"{self.name} exited at start ({processes.describe_exit(self.process.returncode)});"
                    f" see {self.log.name}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} not ready after {START_TIMEOUT_SECONDS:.0f} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL after a grace period."""
        if self.process is not None:
            await processes.terminate(self.process, STOP_GRACE_SECONDS)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


class Stack:
    """restate-server and the payment service for one set of settings."""

    def __init__(self, settings: Settings, say: Say = say_to_stderr) -> None:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "logs").mkdir(exist_ok=True)
        signing_key = data_dir / "identity" / "private.pem"
        settings = dataclasses.replace(
            settings, identity_key=identity.public_key(identity.ensure_private_key(signing_key))
        )
        self.settings = settings
        self.say = say
        self.admin = Admin(settings.admin_url)
        self._http = httpx.AsyncClient(timeout=2.0)
        self._stopping = asyncio.Event()
        config_file = data_dir / "restate-server.toml"
        config_file.write_text(restate_server.config_toml(settings, signing_key))
        env = {**os.environ, **settings.to_env()}
        self.server = Child(
            name="restate-server",
            argv=restate_server.argv(settings, config_file),
            env=env,
            ready=self._server_ready,
            pid_file=data_dir / "restate-server.pid",
            log=(data_dir / "logs" / "restate-server.log").open("ab"),
        )
        self.service = Child(
            name="service",
            argv=[sys.executable, "-m", os.environ.get("PAYMENTS_SERVICE_MODULE", "payments.serve")],
            env=env,
            ready=self._service_ready,
            pid_file=data_dir / "service.pid",
            log=(data_dir / "logs" / "service.log").open("ab"),
        )

    async def run(self) -> None:
        """Start everything, supervise until SIGINT or SIGTERM, then stop everything."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stopping.set)
        try:
            with self._exclusive():
                await self.start()
                self.say("ready; Ctrl-C stops everything")
                await self.supervise()
        finally:
            await self.stop()

    async def start(self) -> None:
        """Start restate-server, then the service, then register the deployment."""
        settings = self.settings
        self._check_ports()
        self.say(f"starting restate-server {restate_server.binary()}")
        await self.server.start()
        self.say(f"starting the service on {settings.service_url}")
        await self.service.start()
        await self.admin.register(settings.service_url)
        self.say(f"registered the deployment {settings.service_url}")

    async def supervise(self) -> None:
        """Restart whichever child dies, until the stack is asked to stop."""
        watchers = [asyncio.create_task(self._watch(child)) for child in self.children]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([stopping, *watchers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a watcher only ends by raising
        finally:
            for task in (stopping, *watchers):
                task.cancel()

    async def stop(self) -> None:
        """Stop the service, then restate-server; SIGKILL what does not stop in time."""
        self._stopping.set()
        await self.service.stop()
        await self.server.stop()
        for child in self.children:
            child.log.close()
        await self.admin.aclose()
        await self._http.aclose()

    @property
    def children(self) -> tuple[Child, Child]:
        """The supervised processes, in start order."""
        return (self.server, self.service)

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.process is not None
            returncode = await child.process.wait()
            if self._stopping.is_set():
                return
            ran_for = time.monotonic() - child.started_at
            if ran_for > STABLE_AFTER_SECONDS:
                child.restarts = 0
            delay = RESTART_BACKOFF_SECONDS[min(child.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
            child.restarts += 1
            self.say(
                f"{child.name} died ({processes.describe_exit(returncode)}); restarting in {delay:.1f} s"
            )
            await asyncio.sleep(delay)
            if self._stopping.is_set():
                return
            try:
                await child.start()
            except StackError as error:
                self.say(f"{error}; trying again")
                await child.stop()
                continue
            self.say(f"{child.name} is back (pid {child.process.pid})")

    async def _server_ready(self) -> bool:
        ingress = f"{self.settings.ingress_url}/restate/health"
        return await self.admin.healthy() and await self._answers(ingress)

    async def _service_ready(self) -> bool:
        return await self._answers(f"{self.settings.service_url}/health")

    async def _answers(self, url: str) -> bool:
        try:
            return (await self._http.get(url)).is_success
        except httpx.TransportError:
            return False

    def _check_ports(self) -> None:
        settings = self.settings
        ports = {
            "ingress": settings.ingress_port,
            "admin": settings.admin_port,
            "node": settings.node_port,
            "service": settings.service_port,
        }
        busy = [
            f"{name} port {port}"
            for name, port in ports.items()
            if not processes.port_is_free(settings.host, port)
        ]
        if busy:
            raise StackError(f"already in use on {settings.host}: {', '.join(busy)}")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold a lock on the data directory: two stacks on one directory would corrupt it."""
        with (self.settings.data_dir / "stack.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackError(f"another `payments up` is using {self.settings.data_dir}") from None
            yield
