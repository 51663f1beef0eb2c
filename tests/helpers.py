"""Small helpers the test layers share."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from payments.client import PaymentsClient
from payments.config import Settings
from payments.console.restate import literal
from payments.runtime.admin import Admin
from payments.service.ledger import Ledger


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def payments_cli(
    *args: str,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``payments ARGS`` in a process of its own, pointed at ``settings``' stack if given; never raises on
    its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "payments.cli", *args],
        input=stdin,
        env={**os.environ, **(settings.to_env() if settings else {}), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_until_new(client: PaymentsClient, payment_id: str) -> None:
    """Wait until ``payment_id`` is NEW (its expiry timer fired); fail the test after 30 s."""
    for _ in range(300):
        if (await client.get_status(payment_id)).state == "NEW":
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{payment_id} did not expire")


async def stored_payment(admin: Admin, payment_id: str) -> bytes | None:
    """The payment Restate stores for ``payment_id``, as stored; None when it stores none."""
    rows = await admin.query(
        "SELECT value FROM state WHERE service_name = 'payments' AND key = 'payment'"
        f" AND service_key = {literal(payment_id)}"
    )
    return bytes.fromhex(rows[0]["value"]) if rows else None


async def set_stored_payment(settings: Settings, payment_id: str, value: bytes | None) -> None:
    """Make Restate store ``value`` as ``payment_id``'s payment (None: nothing), through its admin API."""
    new_state = {} if value is None else {"payment": list(value)}
    async with (
        httpx.AsyncClient(base_url=settings.admin_url, timeout=10) as http,
        Admin(settings.admin_url) as admin,
    ):
        response = await http.post(
            "/services/payments/state", json={"object_key": payment_id, "new_state": new_state}
        )
        assert response.is_success, response.text
        for _ in range(100):  # the admin API applies it later
            if await stored_payment(admin, payment_id) == value:
                return
            await asyncio.sleep(0.1)
    pytest.fail(f"Restate did not apply the new state of {payment_id}")


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


def on_database(url: str, name: str) -> str:
    """``url`` pointing at the database ``name`` of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def fresh_database(admin_url: str) -> str:
    """The URL (as ``admin_url``'s administrator) of a new, empty database on its server."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return on_database(admin_url, name)


async def fresh_ledger(admin_url: str, traffic: Callable[[Ledger], Awaitable[object]]) -> str:
    """A new database on ``admin_url``'s server, migrated, after ``traffic`` through the ledger: its URL."""
    url = await fresh_database(admin_url)
    ledger = await Ledger.connect(url, max_size=1)
    try:
        await ledger.migrate()
        await traffic(ledger)
    finally:
        await ledger.close()
    return url
