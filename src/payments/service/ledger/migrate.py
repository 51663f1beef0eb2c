"""The ledger's schema migrations: versioned SQL files, each applied once, in order.

``migrations/NNNN_name.sql`` is applied in a transaction of its own and recorded in
``schema_migrations`` in that same transaction, so a file is either wholly applied and recorded or
not at all. Each transaction first takes a transaction-scoped advisory lock: two migrations run at
once (two `payments migrate`, or stacks sharing a server) apply each file once, one after the other.
An administrator runs them (``payments migrate``); the service's role may not.

Hand-written rather than yoyo or alembic: both drive the database through a second, synchronous
driver (psycopg or SQLAlchemy), a dependency and a connection setup of their own beside asyncpg,
for what is here a loop over a few files.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

LOG = logging.getLogger("payments.ledger")

LOCK_KEY: Final = 0x1ED6E5
"""The advisory lock migrations hold; any constant no other user of the database takes."""

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


APPLIED: Final = "SELECT version FROM schema_migrations"
"""The versions applied; the table is there once any migration ran."""


def migrations() -> list[tuple[int, str, str]]:
    """Every migration shipped, as (version, name, SQL), oldest first."""
    found = []
    for item in resources.files(__package__).joinpath("migrations").iterdir():
        name = item.name.removesuffix(".sql")
        if item.name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, item.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(connection: PoolConnectionProxy) -> list[str]:
    """Apply the migrations ``connection``'s database lacks; the names of those applied now.

    A migration's warnings (a role it could not create) go to this process's log: asyncpg drops
    them otherwise.
    """
    connection.add_log_listener(_log_warning)
    try:
        applied = await _apply(connection)
        await asyncio.sleep(0)  # asyncpg hands a notice to its listeners at the loop's next turn
        return applied
    finally:
        # A connection that goes back to its pool with a listener still on it makes asyncpg warn.
        connection.remove_log_listener(_log_warning)


def _log_warning(_: object, message: asyncpg.PostgresLogMessage) -> None:
    if message.severity == "WARNING":
        LOG.warning("ledger migration: %s", message.message)


async def _apply(connection: PoolConnectionProxy) -> list[str]:
    applied = []
    for version, name, sql in migrations():
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await connection.execute(_CREATE_TABLE)
            if await connection.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", version):
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    return applied
