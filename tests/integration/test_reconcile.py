"""``payments reconcile`` on a real stack: clean after real traffic, loud once either side is tampered with.

The stack is this module's own, since the tests change its ledger and Restate's state behind the
service's back (and put them back afterwards).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from payments.client import PaymentsClient
from payments.runtime.admin import Admin
from payments.runtime.processes import port_is_free
from payments.runtime.reconcile import Reconciliation, read_ledger, reconcile
from payments.service.ledger import Ledger
from payments.tools.launcher import LaunchedDatabase, LaunchedStack
from tests.helpers import payments_cli, set_stored_payment, stored_payment

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    with LaunchedStack(Path(tmp_path_factory.mktemp("reconcile"))) as launched:
        yield launched


@pytest.fixture
async def traffic(own_stack: LaunchedStack, unique: str) -> dict[str, str]:
    """Payments, a refund, a tombstone, a declined payment and deposits; names the ids by what they are."""
    ids = {
        "completed": f"{unique}-paid",
        "refunded": f"{unique}-refunded",
        "tombstone": f"{unique}-tombstone",
        "account": f"{unique}-a",
    }
    account = ids["account"]
    async with PaymentsClient(own_stack.settings.ingress_url) as client:
        await client.deposit(account, 500)
        assert (await client.make_payment(ids["completed"], account, 100)).outcome == "completed"
        assert (await client.make_payment(ids["refunded"], account, 200)).outcome == "completed"
        assert (await client.cancel_payment(ids["refunded"])).outcome == "refunded"
        assert (await client.cancel_payment(ids["tombstone"])).outcome == "cancelled"
        assert (await client.make_payment(f"{unique}-declined", account, 10**9)).outcome == "declined"
        await client.deposit(f"{unique}-b", 7)
    return ids


def found(result: Reconciliation) -> set[tuple[str, str]]:
    return {(problem.check, problem.subject) for problem in result.problems}


async def test_real_traffic_reconciles_clean(own_stack: LaunchedStack, traffic: dict[str, str]) -> None:
    result = await reconcile(own_stack.settings)

    assert result.problems == ()
    assert result.payment_ids >= 3
    done = payments_cli("reconcile", "--json", settings=own_stack.settings)
    assert (done.returncode, json.loads(done.stdout)["ok"]) == (0, True), done.stdout


async def test_reconcile_reads_restate_through_the_next_node_when_node_1_does_not_answer(
    own_stack: LaunchedStack, traffic: dict[str, str]
) -> None:
    # A cluster whose node 1 is down: nothing listens on its admin port, node 2's is the stack's.
    settings = own_stack.settings
    if not port_is_free(settings.host, settings.admin_port - 1):
        pytest.skip("the port below the stack's admin API is in use")
    node_1_down = dataclasses.replace(settings, nodes=2, admin_port=settings.admin_port - 1)

    result = await reconcile(node_1_down)

    assert result.problems == ()
    assert result.payment_ids >= 3
    done = payments_cli(
        "reconcile", "--json", "--nodes", "2", "--admin-port", str(node_1_down.admin_port), settings=settings
    )
    assert (done.returncode, json.loads(done.stdout)["ok"]) == (0, True), done.stdout


@asynccontextmanager
async def entry_changed(stack: LaunchedStack, transfer_id: str, account_id: str) -> AsyncIterator[None]:
    """One entry's amount a cent lower, as a superuser past the immutability triggers; put back after."""
    connection = await asyncpg.connect(stack.settings.admin_ledger_url)
    update = "UPDATE ledger_entries SET amount = amount + $3 WHERE transfer_id = $1 AND account_id = $2"
    try:
        await connection.execute("SET session_replication_role = replica")
        assert await connection.execute(update, transfer_id, account_id, -1) == "UPDATE 1"
        yield
    finally:
        await connection.execute(update, transfer_id, account_id, 1)
        await connection.close()


async def test_an_entry_changed_behind_the_ledgers_back_is_reported(
    own_stack: LaunchedStack, traffic: dict[str, str]
) -> None:
    async with Admin(own_stack.settings.admin_url) as admin:
        payment = await stored_payment(admin, traffic["completed"])
    assert payment is not None
    debit_id = json.loads(payment)["debit_id"]
    async with entry_changed(own_stack, debit_id, traffic["account"]):
        result = await reconcile(own_stack.settings)
        done = payments_cli("reconcile", "--json", settings=own_stack.settings)

    expected = {("cached-balance", traffic["account"]), ("unbalanced-transfer", debit_id)}
    assert expected <= found(result)
    assert done.returncode == 1
    assert expected <= {(p["check"], p["subject"]) for p in json.loads(done.stdout)["problems"]}
    assert (await reconcile(own_stack.settings)).ok


@pytest.mark.parametrize(
    ("edited", "edit", "check"),
    [
        (
            "tombstone",
            {"state": "COMPLETED", "charge": {"account_id": "x", "amount": 1}},
            "completed-without-debit",
        ),
        ("completed", {"state": "CANCELLED"}, "cancelled-not-refunded"),
        ("refunded", {"state": "COMPLETED"}, "completed-but-refunded"),
    ],
)
async def test_a_restate_state_the_ledger_contradicts_is_reported(
    own_stack: LaunchedStack, traffic: dict[str, str], edited: str, edit: dict[str, Any], check: str
) -> None:
    payment_id = traffic[edited]
    async with Admin(own_stack.settings.admin_url) as admin:
        original = await stored_payment(admin, payment_id)
    assert original is not None
    await set_stored_payment(
        own_stack.settings, payment_id, json.dumps({**json.loads(original), **edit}).encode()
    )
    try:
        result = await reconcile(own_stack.settings)
    finally:
        await set_stored_payment(own_stack.settings, payment_id, original)

    assert found(result) == {(check, payment_id)}


async def test_two_debits_of_one_id_within_a_window_are_a_double_charge(
    database: LaunchedDatabase, unique: str
) -> None:
    """Say an attempt committed its debit and died, and its retry got another transfer id: the
    orphan is older than the debit Restate stored, and only its time gives it away."""
    opened = await Ledger.connect(database.url, max_size=1)
    try:
        await opened.migrate()
        for attempt in ("first", "retry"):
            await opened.withdraw(f"{unique}-{attempt}", f"{unique}-a", 5, f"{unique}-p", opening=100)
    finally:
        await opened.close()

    async def charged_twice(window_seconds: float) -> bool:
        facts = await read_ledger(database.url, [], window_seconds)
        return ("charged-twice", f"{unique}-p") in {(p.check, p.subject) for p in facts.problems}

    assert await charged_twice(60)
    assert not await charged_twice(0.001)  # debits a window apart are two lifecycles' charges
