"""Configuration from ``PAYMENTS_*`` environment variables, with the defaults documented in the README.

The stack passes its settings to the service process through the same variables, so the service
and the supervisor always agree on them.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from payments.domain.balances import MAX_BALANCE

PREFIX = "PAYMENTS_"
MAX_EXPIRY_SECONDS = 366 * 24 * 3600.0
MAX_NODES = 9
DATABASE_USER = "payments"
"""The embedded PostgreSQL's superuser: the administrator, which migrates the ledger and which
``payments psql`` opens; the service and the console never connect as it."""
DATABASE_NAME = "payments"
SERVICE_DATABASE_USER = "payments_service"
"""The role the service writes the ledger as: it may only call the ledger's write functions and
read (migration 0005)."""
CONSOLE_DATABASE_USER = "payments_console"
"""The role the console reads the ledger as: it may only SELECT (migration 0002)."""
DATABASE_ROLES = (DATABASE_USER, SERVICE_DATABASE_USER, CONSOLE_DATABASE_USER)
"""The roles that log in to the embedded server, each with a password of its own."""


class Part(enum.StrEnum):
    """The processes of a stack, by the name of their pid, log and config files."""

    SERVICE = "service"
    RESTATE_SERVER = "restate-server"
    """In a cluster, node N's files are ``restate-server-N``."""
    DATABASE = "postgres"
    """The embedded PostgreSQL's postmaster; not started when ``PAYMENTS_DATABASE_URL`` is set."""
    CONSOLE = "console"
    """The operator console: read-only pages over the ledger and Restate."""


@dataclass(frozen=True, slots=True)
class Node:
    """One restate-server of the stack: its number (from 1) and its ports.

    Node ``index`` listens on each base port of the settings plus ``index - 1``.
    """

    index: int
    clustered: bool
    host: str
    ingress_port: int
    admin_port: int
    node_port: int

    @property
    def label(self) -> str:
        """Its pid, log and config files' name: ``restate-server``, or ``restate-server-2`` in a cluster."""
        return f"{Part.RESTATE_SERVER}-{self.index}" if self.clustered else Part.RESTATE_SERVER.value

    @property
    def ingress_url(self) -> str:
        """Where clients send their calls to this node."""
        return f"http://{self.host}:{self.ingress_port}"

    @property
    def admin_url(self) -> str:
        """This node's admin API, which also serves the web UI under ``/ui/``."""
        return f"http://{self.host}:{self.admin_port}"

    @property
    def address(self) -> str:
        """Where the other nodes reach this one (Restate's advertised address)."""
        return f"http://{self.host}:{self.node_port}/"

    @property
    def health_urls(self) -> tuple[str, str]:
        """The URLs that answer once the node serves its admin API and its ingress."""
        return (f"{self.admin_url}/health", f"{self.ingress_url}/restate/health")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that can be configured, one field per ``PAYMENTS_<FIELD>`` variable."""

    host: str = "127.0.0.1"
    nodes: int = 1
    """restate-server processes on this machine: 1, or a cluster whose log is replicated (3 to survive
    the loss of one)."""
    partitions: int = 1
    """Restate partitions: read once, when the stack's data directory is first created. One suits a
    2-core machine best (docs/performance.md); more spread the work over more cores and nodes."""
    ingress_port: int = 8080
    admin_port: int = 9070
    node_port: int = 5122
    service_port: int = 9080
    data_dir: Path = Path(".restate-data")
    expiry_seconds: float = 24 * 3600.0
    opening_balance: int = 100_000
    auto_open: bool = True
    """Whether an account nobody opened is opened on first use with ``opening_balance``; when not,
    it is 404 ``account not found`` until an operator opens it (``payments open``)."""
    identity_key: str = ""
    """The public key whose signature the service requires; the stack derives it from its own
    private key, so it is set for the service process and not by users."""
    service_module: str = "payments.service.serve"
    """The module ``payments up`` runs as the service (tests run deliberately broken ones)."""
    restate_server_bin: str = ""
    """The restate-server binary; empty: the one npm installed (``node_modules`` in the current
    directory or one above it), else ``restate-server`` on the PATH."""
    database_url: str = ""
    """An existing PostgreSQL for the ledger, as the service's role; empty: ``payments up`` runs its
    own (:attr:`ledger_url`)."""
    database_admin_url: str = ""
    """The same PostgreSQL as an administrator, for ``payments migrate``; empty: the embedded
    server's superuser. Only the migration gets it, never the service or the console."""
    database_port: int = 5432
    """The loopback TCP port of the PostgreSQL that ``payments up`` runs."""
    console_port: int = 9090
    """Where ``payments up`` serves the operator console."""
    console_database_url: str = ""
    """How the console reads the ledger, as the read-only role ``payments_console``; empty: through
    the embedded server's socket, or ``database_url`` with that role as its user."""
    console_hosts: str = ""
    """Host names the console answers to beside ``host``, ``localhost`` and ``127.0.0.1``, comma
    separated: the name a reverse proxy in front of it forwards. Any other Host is refused, so a
    page of another site cannot reach it through a name that resolves to loopback."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
        """Read the settings from ``environ``; ``overrides`` that are not None win over it."""
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _convert(field.name, field.type, raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse settings the service cannot run with."""
        if not 0 < self.expiry_seconds <= MAX_EXPIRY_SECONDS:
            raise ValueError(
                f"{PREFIX}EXPIRY_SECONDS must be more than 0 and at most {MAX_EXPIRY_SECONDS},"
                f" not {self.expiry_seconds}"
            )
        if not 0 <= self.opening_balance <= MAX_BALANCE:
            raise ValueError(
                f"{PREFIX}OPENING_BALANCE must be 0 to {MAX_BALANCE} cents (the largest balance every"
                f" JSON client reads exactly), not {self.opening_balance}"
            )
        if self.partitions < 1:
            raise ValueError(f"{PREFIX}PARTITIONS must be at least 1, not {self.partitions}")
        if self.database_admin_url and not self.database_url:
            # It would migrate, and set the embedded roles' passwords on, a server the ledger is not on.
            raise ValueError(
                f"{PREFIX}DATABASE_ADMIN_URL names the administrator of the server of {PREFIX}DATABASE_URL:"
                " set both, or neither for the embedded PostgreSQL"
            )
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"{PREFIX}NODES must be 1 to {MAX_NODES}, not {self.nodes}")
        ports = [self.service_port, self.console_port]
        if not self.database_url:
            ports.append(self.database_port)
        for node in self.restate_nodes:
            ports += [node.ingress_port, node.admin_port, node.node_port]
        if len(set(ports)) != len(ports) or not all(0 < port < 65536 for port in ports):
            raise ValueError(
                f"the ports must be distinct and at most 65535: {PREFIX}INGRESS_PORT, {PREFIX}ADMIN_PORT"
                f" and {PREFIX}NODE_PORT each give {self.nodes} consecutive port(s), one per node,"
                f" beside {PREFIX}SERVICE_PORT, {PREFIX}CONSOLE_PORT and {PREFIX}DATABASE_PORT;"
                f" got {sorted(ports)}"
            )

    def to_env(self) -> dict[str, str]:
        """The variables that give another process these settings."""
        return {
            PREFIX + field.name.upper(): str(getattr(self, field.name)) for field in dataclasses.fields(self)
        }

    @property
    def restate_nodes(self) -> tuple[Node, ...]:
        """The restate-server processes, node 1 first."""
        return tuple(
            Node(
                index=index,
                clustered=self.nodes > 1,
                host=self.host,
                ingress_port=self.ingress_port + index - 1,
                admin_port=self.admin_port + index - 1,
                node_port=self.node_port + index - 1,
            )
            for index in range(1, self.nodes + 1)
        )

    @property
    def replication(self) -> int:
        """On how many nodes the log keeps each record: a majority, like the metadata store's quorum."""
        return self.nodes // 2 + 1

    @property
    def tolerated_failures(self) -> int:
        """How many nodes can be down at once while the stack still answers."""
        return (self.nodes - 1) // 2

    @property
    def ingress_url(self) -> str:
        """Where clients send their calls: node 1's ingress."""
        return f"http://{self.host}:{self.ingress_port}"

    @property
    def ingress_urls(self) -> tuple[str, ...]:
        """Every node's ingress; a client that cannot reach one moves to the next."""
        return tuple(node.ingress_url for node in self.restate_nodes)

    @property
    def admin_url(self) -> str:
        """Restate's admin API on node 1, which also serves the web UI under ``/ui/``."""
        return f"http://{self.host}:{self.admin_port}"

    def pid_file(self, label: str) -> Path:
        """Where the supervisor records the pid of the process named ``label``, for users and tests."""
        return self.data_dir / f"{label}.pid"

    @property
    def ready_file(self) -> Path:
        """Where ``payments up`` writes its pid once everything serves; it is gone once it stops."""
        return self.data_dir / "ready"

    @property
    def service_url(self) -> str:
        """Where restate-server reaches the Python service."""
        return f"http://{self.host}:{self.service_port}"

    @property
    def signing_key(self) -> Path:
        """The private key restate-server signs its requests to the service with."""
        return self.data_dir / "identity" / "private.pem"

    @property
    def database_dir(self) -> Path:
        """The embedded PostgreSQL's cluster (its ``PGDATA``)."""
        return self.data_dir / Part.DATABASE

    @property
    def database_socket_dir(self) -> Path:
        """The directory of the embedded PostgreSQL's Unix socket, private to the server's user."""
        return self.data_dir.absolute() / f"{Part.DATABASE}-socket"

    @property
    def database_password_file(self) -> Path:
        """The password of the embedded server's superuser ``payments``, as initdb was given it."""
        return self.data_dir / f"{Part.DATABASE}-password"

    def passfile(self, role: str) -> Path:
        """The embedded server's password of ``role``, in the form libpq and asyncpg read (mode 0600)."""
        return self.data_dir.absolute() / f"{Part.DATABASE}-{role}.pgpass"

    @property
    def ledger_url(self) -> str:
        """Where the service writes the ledger: ``database_url``, else the embedded server's socket."""
        return self.database_url or self._socket_url(SERVICE_DATABASE_USER)

    @property
    def admin_ledger_url(self) -> str:
        """Where an administrator migrates the ledger: ``database_admin_url``, else the embedded server.

        Raises ValueError for a ledger of its own (``database_url``) whose administrator is not given.
        """
        if self.database_url and not self.database_admin_url:
            raise ValueError(f"{PREFIX}DATABASE_ADMIN_URL is not set: this needs the ledger's administrator")
        return self.database_admin_url or self._socket_url(DATABASE_USER)

    def _socket_url(self, user: str) -> str:
        """The embedded server's ledger as ``user``, through its socket, with that role's password."""
        return (
            f"postgresql://{user}@/{DATABASE_NAME}?host={quote(str(self.database_socket_dir))}"
            f"&port={self.database_port}&passfile={quote(str(self.passfile(user)))}"
        )

    @property
    def console_ledger_url(self) -> str:
        """Where the console reads the ledger, as the role that may only read it."""
        if self.console_database_url:
            return self.console_database_url
        if not self.database_url:
            return self._socket_url(CONSOLE_DATABASE_USER)
        parts = urlsplit(self.database_url)
        host = parts.netloc.rpartition("@")[2]
        # The service's credentials may sit in the query too, where they would outlive the netloc's.
        query = "&".join(
            pair
            for pair in parts.query.split("&")
            if pair and unquote(pair.partition("=")[0]) not in ("user", "password")
        )
        return urlunsplit(parts._replace(netloc=f"{CONSOLE_DATABASE_USER}@{host}", query=query))

    @property
    def console_proxy_hosts(self) -> tuple[str, ...]:
        """The host names of ``console_hosts``: those of proxies in front of the console."""
        # Lower case, as URL parsing gives a host name back.
        return tuple(name.strip().lower() for name in self.console_hosts.split(",") if name.strip())

    @property
    def console_host_names(self) -> tuple[str, ...]:
        """Every Host name the console answers to."""
        return tuple(dict.fromkeys([self.host, "localhost", "127.0.0.1", *self.console_proxy_hosts]))

    @property
    def console_url(self) -> str:
        """Where the operator console answers."""
        return f"http://{self.host}:{self.console_port}"

    @property
    def console_health_url(self) -> str:
        """The URL that answers once the console serves."""
        return f"{self.console_url}/health"

    @property
    def service_health_url(self) -> str:
        """The URL that answers once the service serves."""
        return f"{self.service_url}/health"


def _convert(name: str, kind: object, raw: str) -> object:
    converters: dict[str, Callable[[str], object]] = {
        "int": int,
        "float": float,
        "Path": Path,
        "str": str,
        "bool": _boolean,
    }
    try:
        return converters[str(kind)](raw)
    except ValueError:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None


def _boolean(raw: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return words[raw.strip().lower()]
    except KeyError:
        raise ValueError(raw) from None
