"""The ledger's migrations: an administrator's job, which leaves each role the rights it needs only."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from payments.config import CONSOLE_DATABASE_USER, SERVICE_DATABASE_USER
from payments.service.ledger.migrate import migrate, migrations
from payments.tools.launcher import LaunchedDatabase
from tests.helpers import fresh_database

pytestmark = pytest.mark.anyio
LEDGER_TABLES: Final = ("ledger_accounts", "ledger_transfers", "ledger_entries")


async def console_role_exists(url: str) -> bool:
    """Whether the cluster at ``url`` has the console's role (roles belong to the whole cluster)."""
    connection = await asyncpg.connect(url)
    try:
        found: bool = await connection.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", CONSOLE_DATABASE_USER
        )
    finally:
        await connection.close()
    return found


@pytest.fixture
async def server_without_console_role(database: LaunchedDatabase, tmp_path: Path) -> AsyncIterator[str]:
    """The superuser's URL of a server without the console's role: the session's, unless it has one."""
    if not await console_role_exists(database.url):
        yield database.url
        return
    with LaunchedDatabase(tmp_path) as fresh:
        yield fresh.url


async def execute(url: str, *statements: str) -> None:
    """Run ``statements`` one by one (CREATE DATABASE refuses to share a transaction) on a connection."""
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def limited_database(superuser_url: str) -> str:
    """A new role that may log in but not create roles, and a database it owns: the URL to log in as it."""
    name, password = f"limited_{uuid.uuid4().hex[:12]}", secrets.token_hex(16)
    await execute(
        superuser_url,
        f"CREATE ROLE {name} LOGIN NOCREATEROLE PASSWORD '{password}'",
        f"CREATE DATABASE {name} OWNER {name}",
    )
    parts = urlsplit(superuser_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{name}:{password}@{host}", path=f"/{name}"))


async def migrate_as(url: str, caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """Migrate the database at ``url`` as ``payments migrate`` does: the migrations applied, and what it
    logged."""
    caplog.clear()
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool, pool.acquire() as connection:
        applied = await migrate(connection)
    logged = [record.getMessage() for record in caplog.records if record.name == "payments.ledger"]
    return applied, logged


async def test_a_migrator_that_may_not_create_roles_stops_at_the_roles_and_says_why(
    server_without_console_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrations are an administrator's: one that may not create the ledger's roles stops there."""
    url = await limited_database(server_without_console_role)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="create role"):
        await migrate_as(url, caplog)

    connection = await asyncpg.connect(url)
    try:
        applied = {row["name"] for row in await connection.fetch("SELECT name FROM schema_migrations")}
    finally:
        await connection.close()
    assert "0005_roles" not in applied
    assert "0001_ledger" in applied, "each migration is its own transaction: those before it stay"


async def test_after_the_migrations_the_console_and_the_service_may_write_no_table(
    database: LaunchedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    url = await fresh_database(database.url)

    applied, warnings = await migrate_as(url, caplog)

    connection = await asyncpg.connect(url)
    try:
        rights = {
            (role, table, right): await connection.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", role, table, right
            )
            for role in (CONSOLE_DATABASE_USER, SERVICE_DATABASE_USER)
            for table in LEDGER_TABLES
            for right in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        }
    finally:
        await connection.close()
    assert (applied, warnings) == ([name for _, name, _ in migrations()], [])
    assert rights == {key: key[2] == "SELECT" for key in rights}
