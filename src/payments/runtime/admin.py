"""Restate's admin API: health, deployment registration, and SQL over the server's tables."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

REQUEST_TIMEOUT_SECONDS = 10.0


class AdminError(RuntimeError):
    """The admin API refused a request."""


class Admin:
    """A small client of the admin API at ``url``; an async context manager that closes it."""

    def __init__(self, url: str) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def register(self, service_url: str) -> None:
        """Register (or re-register) the service's deployment; safe to repeat."""
        response = await self._http.post("/deployments", json={"uri": service_url, "force": True})
        if not response.is_success:
            raise AdminError(f"registering {service_url} failed: {response.status_code} {response.text}")

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a SQL query over Restate's introspection tables (``state``, ``sys_invocation``)."""
        response = await self._http.post(
            "/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        if not response.is_success:
            raise AdminError(f"query failed: {response.status_code} {response.text}")
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows
