"""The supervisor behind ``payments up``: PostgreSQL, restate-server, the service and the console.

It starts the embedded PostgreSQL (unless ``PAYMENTS_DATABASE_URL`` names another), then
restate-server (one, or every node of a cluster at once), waits until they are healthy, starts the
service, registers the deployment, starts the operator console, and then restarts whichever process
dies, until SIGINT, SIGTERM or SIGHUP stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import re
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from payments.config import PREFIX, Node, Part, Settings
from payments.runtime import health, identity, postgres, processes, restate_server
from payments.runtime.admin import Admin, AdminError

STOP_GRACE_SECONDS = 5.0
START_TIMEOUT_SECONDS = 60.0
PARTITIONS_TIMEOUT_SECONDS = 300.0
"""How long a cluster's partitions may take to elect their leaders after a cold start."""
RESTART_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
STABLE_AFTER_SECONDS = 10.0
"""A child that ran this long before dying is restarted after the shortest pause again."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, a service manager, and the terminal closing: each stops the stack cleanly."""

Say = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot start; the message says why in one line."""


def say_to_stderr(line: str) -> None:
    """Print one line of the supervisor's narration."""
    print(f"payments: {line}", file=sys.stderr, flush=True)


@dataclass
class Child:
    """One supervised process, with what it takes to start it, to know it is ready and to stop it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: health.Ready
    pid_file: Path
    log: IO[bytes]
    stop_signal: signal.Signals = signal.SIGTERM
    as_ids: tuple[int, int] | None = None
    """The uid and gid it runs as, when not this process's."""
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)

    async def start(self) -> None:
        """Start the process and wait until it is ready."""
        try:
            process = self.process = await processes.spawn(self.argv, self.env, self.log, as_ids=self.as_ids)
            self.started_at = time.monotonic()
            processes.write_pid(self.pid_file, process.pid)
        except OSError as error:
            raise StackError(f"{self.name} could not be started: {error}") from None

        def exited() -> str | None:
            return None if process.returncode is None else processes.describe_exit(process.returncode)

        try:
            await health.wait_until(self.ready, exited=exited, seconds=START_TIMEOUT_SECONDS, what=self.name)
        except health.NotReadyError as error:
            raise StackError(f"{error}; see {self.log.name}") from None

    async def stop(self) -> None:
        """Stop the process: its stop signal, then SIGKILL after a grace period."""
        if self.process is None:
            return  # never started: the pid file, if any, is another supervisor's
        await processes.terminate(self.process, STOP_GRACE_SECONDS, self.stop_signal)
        self.pid_file.unlink(missing_ok=True)


class Supervisor:
    """PostgreSQL, restate-server (one or a cluster of nodes) and the payment service for one set of settings.

    It writes into the data directory from the start: run it through :func:`supervise`, which
    holds the directory's lock and sets ``stopping`` on a stop signal.
    """

    def __init__(self, settings: Settings, stopping: asyncio.Event, say: Say = say_to_stderr) -> None:
        data_dir = settings.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.database_user = postgres.server_user()
        embedded = not settings.database_url
        _make_private(data_dir, say, postgres.data_dir_mode(self.database_user) if embedded else 0o700)
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        logs.chmod(0o700)  # older versions made it, and the logs in it, readable by all
        try:
            key = identity.ensure_private_key(settings.signing_key)
            server_binary = restate_server.binary(settings)
        except (identity.KeyFileError, restate_server.BinaryNotFoundError) as error:
            raise StackError(str(error)) from None
        settings = dataclasses.replace(
            settings, identity_key=identity.public_key(key), restate_server_bin=str(server_binary)
        )
        self.settings = settings
        self.say = say
        self._stopping = stopping
        # No child but the migration gets the administrator's URL, which may hold a password.
        admin_url = f"{PREFIX}DATABASE_ADMIN_URL"
        env = {key: value for key, value in {**os.environ, **settings.to_env()}.items() if key != admin_url}
        self.database = self._database(env) if embedded else None
        self.servers = [self._server(node, env) for node in settings.restate_nodes]
        self.service = Child(
            name=Part.SERVICE,
            argv=[sys.executable, "-m", settings.service_module],
            env=env,
            ready=health.answering([settings.service_health_url]),
            pid_file=settings.pid_file(Part.SERVICE),
            log=_open_log(logs / "service.log"),
        )
        # The console gets its read-only role's URL and never the service's, which may hold a password.
        console_env = {key: value for key, value in env.items() if key != f"{PREFIX}DATABASE_URL"}
        console_env[f"{PREFIX}CONSOLE_DATABASE_URL"] = settings.console_ledger_url
        self.console = Child(
            name=Part.CONSOLE,
            argv=[sys.executable, "-m", "payments.console.serve"],
            env=console_env,
            ready=health.answering([settings.console_health_url]),
            pid_file=settings.pid_file(Part.CONSOLE),
            log=_open_log(logs / "console.log"),
        )

    def _database(self, env: dict[str, str]) -> Child:
        """The child that runs the embedded PostgreSQL; SIGINT is its fast shutdown."""
        settings = self.settings
        try:
            server = postgres.argv(settings, self.database_user)
        except postgres.DatabaseError as error:
            raise StackError(str(error)) from None
        return Child(
            name=Part.DATABASE,
            argv=server,
            env=env,
            # The administrator: the service's role exists only once the first migration ran.
            ready=lambda: health.database_answers(settings.admin_ledger_url),
            pid_file=settings.pid_file(Part.DATABASE),
            log=_open_log(settings.data_dir / "logs" / f"{Part.DATABASE}.log"),
            stop_signal=signal.SIGINT,
            as_ids=self.database_user.ids,
        )

    def _server(self, node: Node, env: dict[str, str]) -> Child:
        """The child that runs restate-server ``node``."""
        data_dir = self.settings.data_dir
        return Child(
            name=node.label,
            argv=restate_server.argv(self.settings, self._config_file(node), node),
            env=env,
            ready=health.answering(node.health_urls),
            pid_file=self.settings.pid_file(node.label),
            log=_open_log(data_dir / "logs" / f"{node.label}.log"),
        )

    async def run(self) -> None:
        """Start everything, supervise until a stop signal, then stop everything."""
        ready_file = self.settings.ready_file
        # Left behind by a supervisor that was killed: the pids in them are not ours.
        for stale in (*(child.pid_file for child in self.children), ready_file):
            stale.unlink(missing_ok=True)
        try:
            if await self._unless_stopped(self.start()):
                processes.write_pid(ready_file, os.getpid())
                self.say("ready; Ctrl-C stops everything")
                await self.restart_what_dies()
        finally:
            ready_file.unlink(missing_ok=True)
            await self.stop()

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` unless a stop signal comes first (then cancel it); whether it finished."""
        task = asyncio.create_task(work)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            task.cancel()
        if not task.done() or task.cancelled():
            self.say("stopping before everything started")
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

    async def start(self) -> None:
        """Start PostgreSQL and migrate the ledger, restate-server's nodes, the service, register it.

        The service's role may not change the schema, so the migration comes before the service.
        """
        settings = self.settings
        check_data_layout(settings)
        self._check_ports()
        if self.database is not None:
            await self._start_database(self.database)
        if self.database is not None or settings.database_admin_url:
            await self._migrate()
        for node in settings.restate_nodes:
            self._config_file(node).write_text(restate_server.config_toml(settings, node))
        if settings.nodes == 1:
            self.say(f"starting restate-server {settings.restate_server_bin}")
        else:
            self.say(
                f"starting {settings.nodes} restate-server nodes (replication {settings.replication})"
                f" {settings.restate_server_bin}"
            )
        # Together: a cluster's nodes wait for each other (its log needs `replication` of them).
        await asyncio.gather(*(server.start() for server in self.servers))
        self.say(f"starting the service on {settings.service_url}")
        await self.service.start()
        await self._register()
        self.say(f"registered the deployment {settings.service_url}")
        self.say(f"starting the console on {settings.console_url}")
        await self.console.start()
        if settings.nodes > 1:
            # A single node leads its partitions at once; a cluster elects their leaders first.
            self.say("waiting until every partition has a leader")
            try:
                await health.wait_until_every_partition_answers(
                    settings.ingress_urls,
                    settings.partitions,
                    exited=health.still_running,
                    seconds=PARTITIONS_TIMEOUT_SECONDS,
                )
            except health.NotReadyError as error:
                raise StackError(str(error)) from None

    async def _migrate(self) -> None:
        """Migrate the ledger as its administrator, then (embedded) set the roles' passwords.

        The migration runs as ``payments migrate``, by module name: the runtime does not import the service.
        """
        self.say("migrating the ledger")
        migration = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "payments.cli",
            "migrate",
            env={**os.environ, **self.settings.to_env()},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said, _ = await migration.communicate()
        for line in said.decode(errors="replace").splitlines():
            self.say(line)
        if migration.returncode != 0:
            raise StackError(f"the ledger's migration failed (exit code {migration.returncode})")
        if self.database is not None:
            try:
                await postgres.set_role_passwords(self.settings)
            except postgres.DatabaseError as error:
                raise StackError(str(error)) from None

    async def _start_database(self, database: Child) -> None:
        """Create the cluster on first use, then start PostgreSQL."""
        settings = self.settings
        try:
            # initdb takes about a second: in a thread, so that a stop signal is heard meanwhile.
            created = await asyncio.to_thread(postgres.prepare, settings, self.database_user)
        except postgres.DatabaseError as error:
            raise StackError(str(error)) from None
        if created:
            self.say(f"created PostgreSQL's cluster in {settings.database_dir}")
        as_user = f" as {self.database_user.name}" if self.database_user.is_other else ""
        self.say(f"starting PostgreSQL{as_user} on {settings.host}:{settings.database_port}")
        await database.start()

    async def restart_what_dies(self) -> None:
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
        """Stop the console, the service, PostgreSQL, then restate-server's nodes; SIGKILL what lingers.

        PostgreSQL stops before restate-server so that no invocation that restate-server replays
        while the stack stops finds the service without its database.
        """
        self._stopping.set()
        await self.console.stop()
        await self.service.stop()
        if self.database is not None:
            await self.database.stop()
        await asyncio.gather(*(server.stop() for server in self.servers))
        for child in self.children:
            child.log.close()

    @property
    def children(self) -> tuple[Child, ...]:
        """The supervised processes, in start order."""
        database = () if self.database is None else (self.database,)
        return (*database, *self.servers, self.service, self.console)

    async def _register(self) -> None:
        """Register the service through the first node whose admin API takes it: any node will do."""
        failures = []
        for node in self.settings.restate_nodes:
            async with Admin(node.admin_url) as admin:
                try:
                    await admin.register(self.settings.service_url)
                except (AdminError, httpx.TransportError) as error:
                    failures.append(f"{node.label}: {error!r}")
                else:
                    return
        raise StackError(f"no node registered the deployment: {'; '.join(failures)}")

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

    def _config_file(self, node: Node) -> Path:
        return self.settings.data_dir / f"{node.label}.toml"

    def _check_ports(self) -> None:
        settings = self.settings
        ports = {"service": settings.service_port, "console": settings.console_port}
        if self.database is not None:
            ports["PostgreSQL"] = settings.database_port
        for node in settings.restate_nodes:
            prefix = f"{node.label} " if node.clustered else ""
            ports |= {
                f"{prefix}ingress": node.ingress_port,
                f"{prefix}admin": node.admin_port,
                f"{prefix}node": node.node_port,
            }
        busy = [
            f"{name} port {port}"
            for name, port in ports.items()
            if not processes.port_is_free(settings.host, port)
        ]
        if busy:
            raise StackError(f"already in use on {settings.host}: {', '.join(busy)}")


async def supervise(settings: Settings, say: Say = say_to_stderr) -> None:
    """What ``payments up`` does: lock the data directory, then run a :class:`Supervisor` until stopped.

    The lock comes before anything is written there: a second ``payments up`` on the same
    directory is refused without touching the first one's files. The stop signals are caught
    first of all, so that one that comes while the key is made stops the stack like any other.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    with _owner_only(), _exclusive(settings.data_dir):
        await Supervisor(settings, stopping, say).run()


@contextlib.contextmanager
def _owner_only() -> Iterator[None]:
    """Create every file and directory, ours and restate-server's, open to their owner only."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


_OWN_ENTRIES = ("logs", "identity", "restate", "restate-1")
"""What an older ``payments up`` left in a data directory: one of them says the directory is ours."""


def _make_private(data_dir: Path, say: Say, private: int) -> None:
    """Close a data directory that other users can read, when it is a stack's own, down to ``private``.

    Older versions made it 0755. A directory that holds none of a stack's files may be anything
    (``--data-dir /tmp``), so that one only gets a note. ``private`` is 0711 for a root stack whose
    PostgreSQL runs as another user, who must pass through it (:func:`postgres.data_dir_mode`).
    """
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if not mode & 0o077 & ~private:
        return
    if any((data_dir / name).exists() for name in _OWN_ENTRIES):
        data_dir.chmod(private)
        say(f"{data_dir} was open to other users (mode {mode:04o}); it is private now ({private:04o})")
    else:
        say(f"note: {data_dir} is open to other users (mode {mode:04o}); `chmod 700 {data_dir}` closes it")


def _open_log(path: Path) -> IO[bytes]:
    """Open a child's log for appending, private to its owner."""
    log = path.open("ab")
    os.fchmod(log.fileno(), 0o600)
    return log


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold a lock on the data directory: two stacks on one directory would corrupt it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (data_dir / "stack.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `payments up` is using {data_dir}") from None
        yield


_BASE_DIR = re.compile(r"restate(-[0-9]+)?")
"""The names :func:`payments.restate_server.base_dir` gives a node's directory."""


def check_data_layout(settings: Settings) -> None:
    """Refuse a data directory that holds Restate data of another number of nodes.

    The stack would start an empty Restate beside it and forget every payment id, so a retried
    payment would be charged again.
    """
    data_dir = settings.data_dir
    expected = {restate_server.base_dir(settings, node).name for node in settings.restate_nodes}
    found = {path.name for path in data_dir.iterdir() if path.is_dir() and _BASE_DIR.fullmatch(path.name)}
    if found - expected:
        raise StackError(
            f"{data_dir} holds the data of a Restate with other nodes ({', '.join(sorted(found))});"
            f" {settings.nodes} node(s) would start empty beside it and forget every payment."
            " Use another --data-dir, or the --nodes it was created with"
        )
