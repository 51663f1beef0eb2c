"""Restate's admin API: health, deployment registration, and SQL over the server's tables."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from payments.config import Settings

REQUEST_TIMEOUT_SECONDS = 10.0


class AdminError(RuntimeError):
    """The admin API refused a request, or answered one with what is not an answer."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        """The HTTP status of a refusal; None for an answer that could not be read."""


class Admin:
    """A small client of the admin API at ``url``; an async context manager that closes it."""

    def __init__(self, url: str) -> None:
        self.url = url
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
            raise AdminError(
                f"registering {service_url} failed: {response.status_code} {response.text}",
                response.status_code,
            )

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a SQL query over Restate's introspection tables (``state``, ``sys_invocation``)."""
        response = await self._http.post(
            "/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        if not response.is_success:
            raise AdminError(f"query failed: {response.status_code} {response.text}", response.status_code)
        try:
            rows: list[dict[str, Any]] = response.json()["rows"]
        except (ValueError, KeyError, TypeError) as error:  # something else on that port
            raise AdminError(f"query answered without rows: {response.text[:200]!r}") from error
        return rows


class Admins:
    """The admin APIs of every node of a stack; ``contextlib.aclosing`` closes them.

    A query goes to the node that answered last and, when that node does not answer, to the next: a
    cluster is read while any node serves its admin API (each node's SQL sees every partition).
    """

    def __init__(self, admins: Sequence[Admin]) -> None:
        if not admins:
            raise ValueError("at least one node's admin API is needed")
        self._admins = list(admins)
        self._current = 0

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """The admin APIs of the nodes of the stack that ``settings`` describe, node 1 first."""
        return cls([Admin(node.admin_url) for node in settings.restate_nodes])

    async def aclose(self) -> None:
        """Close every node's connections (``contextlib.aclosing`` calls it)."""
        async with contextlib.AsyncExitStack() as closing:  # closes the others when one fails to
            for admin in self._admins:
                closing.push_async_callback(admin.aclose)

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` from the first node that answers; the last node's failure when none does.

        A refusal of the statement itself (a 4xx) is every node's: it is raised at once.
        """
        failure: Exception | None = None
        for step in range(len(self._admins)):
            index = (self._current + step) % len(self._admins)
            try:
                rows = await self._admins[index].query(sql)
            except AdminError as error:
                if error.status_code is not None and error.status_code < 500:
                    raise
                failure = error
                continue
            except httpx.TransportError as error:
                failure = error
                continue
            self._current = index
            return rows
        assert failure is not None
        raise failure
