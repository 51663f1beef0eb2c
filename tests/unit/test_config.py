"""Settings from ``PAYMENTS_*`` variables: defaults, parsing, refusals and the round trip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.config import MAX_EXPIRY_SECONDS, PREFIX, Settings

DEFAULTS: dict[str, object] = {
    "host": "127.0.0.1",
    "ingress_port": 8080,
    "admin_port": 9070,
    "node_port": 5122,
    "service_port": 9080,
    "data_dir": Path(".restate-data"),
    "expiry_seconds": 86_400.0,
    "opening_balance": 100_000,
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
        ("PAYMENTS_INGRESS_PORT", "18080", "ingress_port", 18080),
        ("PAYMENTS_ADMIN_PORT", "19070", "admin_port", 19070),
        ("PAYMENTS_NODE_PORT", "15122", "node_port", 15122),
        ("PAYMENTS_SERVICE_PORT", "19080", "service_port", 19080),
        ("PAYMENTS_DATA_DIR", "/var/lib/payments", "data_dir", Path("/var/lib/payments")),
        ("PAYMENTS_EXPIRY_SECONDS", "1.5", "expiry_seconds", 1.5),
        ("PAYMENTS_EXPIRY_SECONDS", "60", "expiry_seconds", 60.0),
        ("PAYMENTS_OPENING_BALANCE", "0", "opening_balance", 0),
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
    ],
    ids=lambda value: value or "empty",
)
def test_bad_value_names_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize("override", [{"expiry_seconds": 0.0}, {"opening_balance": -5}], ids=str)
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


@given(
    settings=st.builds(
        Settings,
        host=st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True),
        ingress_port=st.integers(1, 65535),
        admin_port=st.integers(1, 65535),
        node_port=st.integers(1, 65535),
        service_port=st.integers(1, 65535),
        data_dir=st.from_regex(r"/?[a-z0-9_\-]{1,8}(/[a-z0-9_.\-]{1,8}){0,3}", fullmatch=True).map(Path),
        expiry_seconds=st.floats(min_value=1e-3, max_value=MAX_EXPIRY_SECONDS),
        opening_balance=st.integers(0, 2**53 - 1),
    )
)
def test_to_env_from_env_round_trip(settings: Settings) -> None:
    assert Settings.from_env(settings.to_env()) == settings
