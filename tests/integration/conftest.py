"""A real restate-server and the real service, started once per configuration for the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from payments.client import PaymentsClient
from payments.runtime.admin import Admin
from payments.service.ledger import Ledger
from payments.tools.launcher import LaunchedDatabase, LaunchedStack

REPLAY_ON_EVERY_SUSPENSION = {"RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT": "0s"}
"""With no inactivity timeout, an invocation suspends at every await and resumes by replaying its
journal, so any non-determinism in a handler shows up as a failed replay."""


@pytest.fixture(
    scope="session",
    params=[pytest.param({}, id="default"), pytest.param(REPLAY_ON_EVERY_SUSPENSION, id="replay")],
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LaunchedStack]:
    """restate-server and the service, on free ports and a fresh data directory."""
    data_dir: Path = tmp_path_factory.mktemp("stack")
    with LaunchedStack(data_dir, env=request.param) as launched:
        yield launched


@pytest.fixture
async def client(stack: LaunchedStack) -> AsyncIterator[PaymentsClient]:
    """A client of the stack's ingress."""
    async with PaymentsClient(stack.settings.ingress_url) as payments_client:
        yield payments_client


@pytest.fixture
async def admin(stack: LaunchedStack) -> AsyncIterator[Admin]:
    """A client of the stack's admin API."""
    async with Admin(stack.settings.admin_url) as admin_client:
        yield admin_client


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedDatabase]:
    """A PostgreSQL of its own, for tests of the ledger or of a service started by hand."""
    with LaunchedDatabase(Path(tmp_path_factory.mktemp("db"))) as launched:
        yield launched


@pytest.fixture(scope="session")
def migrated_database(database: LaunchedDatabase) -> LaunchedDatabase:
    """The session's PostgreSQL with the ledger's schema, as ``payments migrate`` leaves it."""

    async def migrate() -> None:
        ledger = await Ledger.connect(database.url, max_size=1)
        try:
            await ledger.migrate()
        finally:
            await ledger.close()

    asyncio.run(migrate())
    return database
