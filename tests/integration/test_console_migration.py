"""The ledger's migrations run by a role that may not create roles, as on a managed PostgreSQL.

The console's role is optional: such a service still migrates, with a warning, and when an
administrator created the console's role beforehand it gets its read rights all the same.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from payments.config import CONSOLE_DATABASE_USER
from payments.service.ledger.migrate import migrate, migrations
from payments.tools.launcher import LaunchedDatabase

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
    name = f"limited_{uuid.uuid4().hex[:12]}"
    await execute(
        superuser_url,
        f"CREATE ROLE {name} LOGIN NOCREATEROLE PASSWORD '{secrets.token_hex(16)}'",
        f"CREATE DATABASE {name} OWNER {name}",
    )
    parts = urlsplit(superuser_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{name}@{host}", path=f"/{name}"))


async def migrate_as(url: str, caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """Migrate the database at ``url`` as the service does: the migrations applied, and what it logged."""
    caplog.clear()
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool, pool.acquire() as connection:
        applied = await migrate(connection)
    logged = [record.getMessage() for record in caplog.records if record.name == "payments.ledger"]
    return applied, logged


async def test_a_role_that_may_not_create_roles_migrates_with_a_warning_in_the_log(
    server_without_console_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = await limited_database(server_without_console_role)

    applied, warnings = await migrate_as(url, caplog)

    assert applied == [name for _, name, _ in migrations()]
    assert len(warnings) == 1, warnings
    assert f"role {CONSOLE_DATABASE_USER} not created" in warnings[0]
    assert not await console_role_exists(server_without_console_role)


async def test_the_console_role_an_administrator_created_gets_read_rights_only(
    database: LaunchedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    if not await console_role_exists(database.url):
        # As docs/deployment.md tells an administrator to create it.
        await execute(
            database.url,
            f"CREATE ROLE {CONSOLE_DATABASE_USER} LOGIN NOINHERIT",
            f"ALTER ROLE {CONSOLE_DATABASE_USER} SET default_transaction_read_only = on",
        )
    url = await limited_database(database.url)

    applied, warnings = await migrate_as(url, caplog)

    connection = await asyncpg.connect(url)
    try:
        rights = {
            (table, right): await connection.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", CONSOLE_DATABASE_USER, table, right
            )
            for table in LEDGER_TABLES
            for right in ("SELECT", "INSERT", "UPDATE", "DELETE")
        }
    finally:
        await connection.close()
    assert (applied, warnings) == ([name for _, name, _ in migrations()], [])
    assert rights == {(table, right): right == "SELECT" for table, right in rights}
