"""Configuration from ``PAYMENTS_*`` environment variables, with the defaults documented in the README.

The stack passes its settings to the service process through the same variables, so the service
and the supervisor always agree on them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "PAYMENTS_"
MAX_EXPIRY_SECONDS = 366 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that can be configured, one field per ``PAYMENTS_<FIELD>`` variable."""

    host: str = "127.0.0.1"
    ingress_port: int = 8080
    admin_port: int = 9070
    node_port: int = 5122
    service_port: int = 9080
    data_dir: Path = Path(".restate-data")
    expiry_seconds: float = 24 * 3600.0
    opening_balance: int = 100_000
    identity_key: str = ""
    """The public key whose signature the service requires; the stack derives it from its own
    private key, so it is set for the service process and not by users."""

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
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings the service cannot run with."""
        if not 0 < self.expiry_seconds <= MAX_EXPIRY_SECONDS:
            raise ValueError(
                f"{PREFIX}EXPIRY_SECONDS must be more than 0 and at most {MAX_EXPIRY_SECONDS},"
                f" not {self.expiry_seconds}"
            )
        if self.opening_balance < 0:
            raise ValueError(f"{PREFIX}OPENING_BALANCE must not be negative")

    def to_env(self) -> dict[str, str]:
        """The variables that give another process these settings."""
        return {
            PREFIX + field.name.upper(): str(getattr(self, field.name)) for field in dataclasses.fields(self)
        }

    @property
    def ingress_url(self) -> str:
        """Where clients send their calls."""
        return f"http://{self.host}:{self.ingress_port}"

    @property
    def admin_url(self) -> str:
        """Restate's admin API, which also serves the web UI under ``/ui/``."""
        return f"http://{self.host}:{self.admin_port}"

    @property
    def service_url(self) -> str:
        """Where restate-server reaches the Python service."""
        return f"http://{self.host}:{self.service_port}"


def _convert(name: str, kind: object, raw: str) -> object:
    converters = {"int": int, "float": float, "Path": Path, "str": str}
    try:
        return converters[str(kind)](raw)
    except ValueError:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
