"""Small helpers the test layers share."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from payments.runtime.admin import Admin


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout the tests run from: where ``make`` runs and ``tests.integration`` modules import."""


class NodeAdmin(Admin):
    """A node's admin API that answers every query with ``rows``, or raises ``failure``.

    Neither: a node that is down.
    """

    def __init__(
        self, rows: list[dict[str, Any]] | None = None, failure: Exception | None = None
    ) -> None:  # no HTTP client of its own
        self.rows = rows
        self.failure = failure or httpx.ConnectError("connection refused")
        self.asked: list[str] = []
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    async def query(self, sql: str) -> list[dict[str, Any]]:
        self.asked.append(sql)
        if self.rows is None:
            raise self.failure
        return self.rows
