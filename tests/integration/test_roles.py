"""Who may do what to the ledger: the service's and the console's roles, tried against a real PostgreSQL.

A migrated database of its own; each role is tried from an administrator's session through
``SET ROLE``, which checks the role's own privileges as a login of it would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import asyncpg
import pytest

from payments.config import CONSOLE_DATABASE_USER, SERVICE_DATABASE_USER
from payments.tools.launcher import LaunchedDatabase, LaunchedStack
from tests.helpers import fresh_ledger

pytestmark = pytest.mark.anyio
ROLES: Final = [SERVICE_DATABASE_USER, CONSOLE_DATABASE_USER]
TABLES: Final = ["ledger_accounts", "ledger_transfers", "ledger_entries"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def ledger_url(database: LaunchedDatabase) -> str:
    """A migrated ledger with one account in it, as its administrator."""
    return await fresh_ledger(
        database.url, lambda ledger: ledger.deposit("deposit:1", "a", 100, opening=1_000)
    )


@pytest.fixture
async def admin(ledger_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(ledger_url)
    try:
        yield connection
    finally:
        await connection.close()


async def refused(admin: asyncpg.Connection, role: str, statement: str) -> bool:
    """Whether ``role`` is refused ``statement`` for want of a privilege (and it changed nothing)."""
    try:
        async with admin.transaction():
            await admin.execute(f"SET LOCAL ROLE {role}")
            await admin.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return True
    return False


FORBIDDEN: Final = [
    "INSERT INTO ledger_accounts (id, kind) VALUES ('z', 'customer')",
    (
        "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, status)"
        " VALUES ('deposit:z', 'deposit', '@deposits', 'a', 5, 'posted')"
    ),
    (
        "INSERT INTO ledger_entries (transfer_id, account_id, amount, balance_after)"
        " VALUES ('deposit:1', 'a', 1, 1)"
    ),
    *(f"UPDATE {table} SET created_at = created_at" for table in ["ledger_transfers", "ledger_entries"]),
    "UPDATE ledger_accounts SET balance = balance + 1",
    *(f"DELETE FROM {table}" for table in TABLES),
    *(f"TRUNCATE {table}" for table in TABLES),
    "ALTER TABLE ledger_entries DISABLE TRIGGER USER",
    "SET session_replication_role = replica",
    "COPY ledger_accounts TO PROGRAM 'true'",
    "CREATE FUNCTION planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE TEMPORARY TABLE planted (id int)",
    "SELECT ledger_post('deposit:x', 'deposit', 'a', '@deposits', 5, NULL, NULL, 0)",
    "SELECT ledger_ensure('b', 5)",
]


@pytest.mark.parametrize("statement", FORBIDDEN)
@pytest.mark.parametrize("role", ROLES)
async def test_a_role_is_refused_every_write_but_the_ledgers_functions(
    admin: asyncpg.Connection, role: str, statement: str
) -> None:
    assert await refused(admin, role, statement)


async def test_the_console_may_not_call_the_write_functions(admin: asyncpg.Connection) -> None:
    assert await refused(admin, CONSOLE_DATABASE_USER, "SELECT ledger_deposit('d:c', 'a', 5, NULL, 10000)")


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_reads_the_ledger_and_is_no_superuser(admin: asyncpg.Connection, role: str) -> None:
    async with admin.transaction():
        await admin.execute(f"SET LOCAL ROLE {role}")
        assert await admin.fetchval("SELECT balance FROM ledger_accounts WHERE id = 'a'") == 1_100
        assert not await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")


async def test_the_service_writes_through_the_functions(admin: asyncpg.Connection) -> None:
    transaction = admin.transaction()
    await transaction.start()
    try:
        await admin.execute(f"SET LOCAL ROLE {SERVICE_DATABASE_USER}")
        row = await admin.fetchrow("SELECT * FROM ledger_deposit('deposit:2', 'a', 5, NULL, 10000)")
    finally:
        await transaction.rollback()  # the ledger stays as the other tests expect it
    assert row is not None
    assert (row["balance"], row["repeated"]) == (1_105, False)


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_cannot_log_in_without_its_password(stack: LaunchedStack, role: str) -> None:
    url = stack.settings.ledger_url.split("&passfile=", 1)[0].replace(SERVICE_DATABASE_USER, role, 1)
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(url, password="not-its-password")
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(url, passfile="/nonexistent")


async def test_each_role_logs_in_with_its_own_passfile(stack: LaunchedStack) -> None:
    for url, role in (
        (stack.settings.ledger_url, SERVICE_DATABASE_USER),
        (stack.settings.console_ledger_url, CONSOLE_DATABASE_USER),
    ):
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT current_user") == role
        finally:
            await connection.close()
