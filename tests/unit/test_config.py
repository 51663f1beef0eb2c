"""Settings from ``PAYMENTS_*`` variables: defaults, parsing, refusals and the round trip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.config import MAX_EXPIRY_SECONDS, MAX_NODES, PREFIX, Settings
from payments.domain.balances import MAX_BALANCE

DEFAULTS: dict[str, object] = {
    "host": "127.0.0.1",
    "nodes": 1,
    "partitions": 1,
    "ingress_port": 8080,
    "admin_port": 9070,
    "node_port": 5122,
    "service_port": 9080,
    "data_dir": Path(".restate-data"),
    "expiry_seconds": 86_400.0,
    "opening_balance": 100_000,
    "auto_open": True,
}


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert {name: getattr(settings, name) for name in DEFAULTS} == DEFAULTS
    assert (settings.ingress_url, settings.admin_url, settings.service_url) == (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:9070",
        "http://127.0.0.1:9080",
    )


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("PAYMENTS_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("PAYMENTS_NODES", "3", "nodes", 3),
        ("PAYMENTS_PARTITIONS", "8", "partitions", 8),
        ("PAYMENTS_INGRESS_PORT", "18080", "ingress_port", 18080),
        ("PAYMENTS_ADMIN_PORT", "19070", "admin_port", 19070),
        ("PAYMENTS_NODE_PORT", "15122", "node_port", 15122),
        ("PAYMENTS_SERVICE_PORT", "19080", "service_port", 19080),
        ("PAYMENTS_DATA_DIR", "/var/lib/payments", "data_dir", Path("/var/lib/payments")),
        ("PAYMENTS_EXPIRY_SECONDS", "1.5", "expiry_seconds", 1.5),
        ("PAYMENTS_EXPIRY_SECONDS", "60", "expiry_seconds", 60.0),
        ("PAYMENTS_OPENING_BALANCE", "0", "opening_balance", 0),
        ("PAYMENTS_OPENING_BALANCE", str(MAX_BALANCE), "opening_balance", MAX_BALANCE),
        ("PAYMENTS_AUTO_OPEN", "false", "auto_open", False),
        ("PAYMENTS_AUTO_OPEN", " No ", "auto_open", False),
        ("PAYMENTS_AUTO_OPEN", "true", "auto_open", True),
        ("PAYMENTS_AUTO_OPEN", "1", "auto_open", True),
    ],
    ids=str,
)
def test_env_variable_sets_its_field(variable: str, raw: str, field: str, value: object) -> None:
    settings = Settings.from_env({variable: raw, "INGRESS_PORT": "1", "PAYMENTS_UNKNOWN": "x"})

    assert {name: getattr(settings, name) for name in DEFAULTS} == {**DEFAULTS, field: value}
    assert type(getattr(settings, field)) is type(value)


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PAYMENTS_ADMIN_PORT", "19070")

    assert Settings.from_env().admin_port == 19070


def test_overrides_win_over_the_environment_unless_none() -> None:
    environ = {"PAYMENTS_INGRESS_PORT": "18080", "PAYMENTS_ADMIN_PORT": "19070"}

    settings = Settings.from_env(environ, ingress_port=28080, admin_port=None)

    assert (settings.ingress_port, settings.admin_port) == (28080, 19070)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PAYMENTS_INGRESS_PORT", "abc"),
        ("PAYMENTS_SERVICE_PORT", "80.5"),
        ("PAYMENTS_NODE_PORT", ""),
        ("PAYMENTS_EXPIRY_SECONDS", "soon"),
        ("PAYMENTS_EXPIRY_SECONDS", "0"),
        ("PAYMENTS_EXPIRY_SECONDS", "-1"),
        ("PAYMENTS_OPENING_BALANCE", "-1"),
        ("PAYMENTS_OPENING_BALANCE", "1.5"),
        ("PAYMENTS_OPENING_BALANCE", str(MAX_BALANCE + 1)),
        ("PAYMENTS_OPENING_BALANCE", "9" * 30),
        ("PAYMENTS_NODES", "0"),
        ("PAYMENTS_NODES", str(MAX_NODES + 1)),
        ("PAYMENTS_NODES", "three"),
        ("PAYMENTS_PARTITIONS", "0"),
        ("PAYMENTS_AUTO_OPEN", "maybe"),
        ("PAYMENTS_AUTO_OPEN", ""),
    ],
    ids=lambda value: value or "empty",
)
def test_bad_value_names_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize(
    "override",
    [{"expiry_seconds": 0.0}, {"opening_balance": -5}, {"opening_balance": MAX_BALANCE + 1}],
    ids=str,
)
def test_bad_override_is_refused(override: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=PREFIX):
        Settings.from_env({}, **override)


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_non_finite_expiry_is_refused(raw: str) -> None:
    """NaN and infinity would fail every payment handler building its timer, a retryable error."""
    with pytest.raises(ValueError, match="PAYMENTS_EXPIRY_SECONDS"):
        Settings.from_env({"PAYMENTS_EXPIRY_SECONDS": raw})


def test_to_env_names_every_field() -> None:
    names = {PREFIX + field.name.upper() for field in dataclasses.fields(Settings)}

    assert set(Settings().to_env()) == names


@st.composite
def valid_settings(draw: st.DrawFn) -> Settings:
    # Ports in distinct tens, so that no node's port meets another (at most 9 nodes); the database's
    # and the console's too, or a node's range could reach the default 5432.
    ports = draw(
        st.lists(st.integers(1, 6553).map(lambda n: n * 10 - 9), min_size=6, max_size=6, unique=True)
    )
    return Settings(
        host=draw(st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True)),
        nodes=draw(st.integers(1, MAX_NODES)),
        ingress_port=ports[0],
        admin_port=ports[1],
        node_port=ports[2],
        service_port=ports[3],
        database_port=ports[4],
        console_port=ports[5],
        data_dir=draw(
            st.from_regex(r"/?[a-z0-9_\-]{1,8}(/[a-z0-9_.\-]{1,8}){0,3}", fullmatch=True).map(Path)
        ),
        expiry_seconds=draw(st.floats(min_value=1e-3, max_value=MAX_EXPIRY_SECONDS)),
        opening_balance=draw(st.integers(0, 2**53 - 1)),
    )


@given(settings=valid_settings())
def test_to_env_from_env_round_trip(settings: Settings) -> None:
    assert Settings.from_env(settings.to_env()) == settings


def test_a_single_node_is_node_one_on_the_base_ports() -> None:
    (node,) = Settings().restate_nodes

    assert (node.index, node.label, node.clustered) == (1, "restate-server", False)
    assert (node.ingress_url, node.admin_url, node.address) == (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:9070",
        "http://127.0.0.1:5122/",
    )
    assert Settings().ingress_urls == ("http://127.0.0.1:8080",)


def test_cluster_nodes_take_consecutive_ports_from_the_base_ports() -> None:
    settings = Settings(nodes=3)

    nodes = settings.restate_nodes
    assert [node.label for node in nodes] == ["restate-server-1", "restate-server-2", "restate-server-3"]
    assert [(node.ingress_port, node.admin_port, node.node_port) for node in nodes] == [
        (8080, 9070, 5122),
        (8081, 9071, 5123),
        (8082, 9072, 5124),
    ]
    assert settings.ingress_url == settings.ingress_urls[0] == "http://127.0.0.1:8080"
    assert settings.ingress_urls[2] == "http://127.0.0.1:8082"
    assert nodes[1].health_urls == ("http://127.0.0.1:9071/health", "http://127.0.0.1:8081/restate/health")


@pytest.mark.parametrize(
    ("nodes", "replication", "tolerated"),
    [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (7, 4, 3)],
)
def test_the_log_is_replicated_on_a_majority(nodes: int, replication: int, tolerated: int) -> None:
    settings = Settings(nodes=nodes)

    assert (settings.replication, settings.tolerated_failures) == (replication, tolerated)


@pytest.mark.parametrize(
    "environ",
    [
        {"PAYMENTS_NODES": "3", "PAYMENTS_ADMIN_PORT": "8081"},
        {"PAYMENTS_NODES": "2", "PAYMENTS_SERVICE_PORT": "5123"},
        {"PAYMENTS_INGRESS_PORT": "9070"},
        {"PAYMENTS_NODES": "3", "PAYMENTS_INGRESS_PORT": "65534"},
    ],
    ids=str,
)
def test_ports_that_meet_or_overflow_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="ports must be distinct"):
        Settings.from_env(environ)


def test_the_console_reads_the_embedded_ledger_as_its_own_role_through_the_socket() -> None:
    settings = Settings(data_dir=Path("/srv/payments"), database_port=15432)

    assert settings.console_ledger_url == (
        "postgresql://payments_console@/payments?host=/srv/payments/postgres-socket&port=15432"
        "&passfile=/srv/payments/postgres-payments_console.pgpass"
    )
    assert settings.ledger_url.replace("payments_service", "payments_console") == settings.console_ledger_url


@pytest.mark.parametrize(
    ("database_url", "console_url"),
    [
        (
            "postgresql://admin:s3cret@db.example:5433/ledger?sslmode=require",
            "postgresql://payments_console@db.example:5433/ledger?sslmode=require",
        ),
        ("postgresql://admin:p@ss@db.example/ledger", "postgresql://payments_console@db.example/ledger"),
        ("postgres://admin@[::1]:5433/ledger", "postgres://payments_console@[::1]:5433/ledger"),
        ("postgresql://db.example/ledger", "postgresql://payments_console@db.example/ledger"),
        (
            "postgresql://admin@db.example/ledger?password=s3cret&sslmode=require",
            "postgresql://payments_console@db.example/ledger?sslmode=require",
        ),
        (
            "postgresql://db.example/ledger?user=admin&password=s3cret",
            "postgresql://payments_console@db.example/ledger",
        ),
    ],
    ids=["user-password", "at-in-password", "ipv6", "no-user", "password-in-query", "user-in-query"],
)
def test_the_console_reads_a_database_of_its_own_as_its_role_without_the_service_password(
    database_url: str, console_url: str
) -> None:
    settings = Settings.from_env({"PAYMENTS_DATABASE_URL": database_url})

    assert settings.console_ledger_url == console_url
    assert "s3cret" not in settings.console_ledger_url
    assert settings.ledger_url == database_url


def test_the_console_database_url_wins_as_given() -> None:
    given = "postgresql://reader:its-own@db.example/ledger"

    settings = Settings.from_env(
        {
            "PAYMENTS_DATABASE_URL": "postgresql://admin:s3cret@db.example/ledger",
            "PAYMENTS_CONSOLE_DATABASE_URL": given,
        }
    )

    assert settings.console_ledger_url == given
    assert Settings(console_database_url=given).console_ledger_url == given


def test_the_console_answers_on_its_port_of_the_host() -> None:
    settings = Settings.from_env({"PAYMENTS_CONSOLE_PORT": "19090", "PAYMENTS_HOST": "127.0.0.2"})

    assert (settings.console_port, settings.console_url, settings.console_health_url) == (
        19090,
        "http://127.0.0.2:19090",
        "http://127.0.0.2:19090/health",
    )
    assert Settings().console_url == "http://127.0.0.1:9090"


@pytest.mark.parametrize(
    "environ",
    [
        {"PAYMENTS_CONSOLE_PORT": "9080"},
        {"PAYMENTS_CONSOLE_PORT": "8080"},
        {"PAYMENTS_CONSOLE_PORT": "5432"},
        {"PAYMENTS_NODES": "3", "PAYMENTS_CONSOLE_PORT": "9072"},
        {"PAYMENTS_CONSOLE_PORT": "65536"},
        {"PAYMENTS_CONSOLE_PORT": "0"},
    ],
    ids=str,
)
def test_a_console_port_that_meets_another_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CONSOLE_PORT"):
        Settings.from_env(environ)


def test_the_console_may_take_the_database_port_when_the_database_is_not_ours() -> None:
    settings = Settings.from_env(
        {"PAYMENTS_CONSOLE_PORT": "5432", "PAYMENTS_DATABASE_URL": "postgresql://db.example/ledger"}
    )

    assert settings.console_port == 5432


def test_the_console_answers_to_its_host_loopback_names_and_those_given() -> None:
    settings = Settings(host="10.0.0.5", console_hosts=" Console.Example.com, ,10.0.0.5,ops.internal ")

    assert settings.console_host_names == (
        "10.0.0.5",
        "localhost",
        "127.0.0.1",
        "console.example.com",
        "ops.internal",
    )


def test_an_administrator_is_of_the_ledger_of_its_own_database_url() -> None:
    """An admin URL alone would migrate, and set the embedded roles' passwords on, another server."""
    with pytest.raises(ValueError, match="DATABASE_ADMIN_URL"):
        Settings.from_env({"PAYMENTS_DATABASE_ADMIN_URL": "postgresql://admin@db.example/ledger"})
    elsewhere = Settings(database_url="postgresql://payments_service@db.example/ledger")
    with pytest.raises(ValueError, match="DATABASE_ADMIN_URL is not set"):
        _ = elsewhere.admin_ledger_url
