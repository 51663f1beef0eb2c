"""The pure parts of ``payments reconcile``: Restate's stored states read and held against the debits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payments import cli
from payments.runtime.processes import free_port
from payments.runtime.reconcile import (
    PostedDebit,
    Problem,
    Reconciliation,
    StoredPayment,
    payment_problems,
    stored_payment,
)


def completed(
    debit_id: str | None = "payment:inv_1", amount: int = 100, lifecycle: str | None = "inv_1"
) -> StoredPayment:
    return StoredPayment("p", "COMPLETED", "a", amount, debit_id, lifecycle)


def cancelled(debit_id: str | None = "payment:inv_1", lifecycle: str = "inv_1") -> StoredPayment:
    charged = debit_id is not None
    return StoredPayment(
        "p", "CANCELLED", "a" if charged else None, 100 if charged else None, debit_id, lifecycle
    )


def debit(transfer_id: str = "payment:inv_1", *, refunds: int = 0, amount: int = 100) -> PostedDebit:
    return PostedDebit(transfer_id, "a", amount, refunds)


def checks(payment: StoredPayment, *debits: PostedDebit) -> list[str]:
    return [problem.check for problem in payment_problems([payment], {"p": list(debits)})]


def test_stored_state_is_decoded_from_the_hex_of_its_json() -> None:
    value = {
        "state": "COMPLETED",
        "charge": {"account_id": "a", "amount": 100},
        "lifecycle": "inv_1",
        "debit_id": "payment:inv_1",
    }
    assert stored_payment("p", json.dumps(value).encode().hex()) == completed()


def test_a_tombstone_has_no_charge() -> None:
    value = {"state": "CANCELLED", "charge": None, "lifecycle": "inv_1", "debit_id": None}
    assert stored_payment("p", json.dumps(value).encode().hex()) == cancelled(None)


def stored(charge: object, **fields: object) -> str:
    return (
        json.dumps({"state": "COMPLETED", "charge": charge, "debit_id": "payment:inv_1", **fields})
        .encode()
        .hex()
    )


@pytest.mark.parametrize(
    "value",
    [
        "zz",
        b"not json".hex(),
        b"[]".hex(),
        b'{"charge": null}'.hex(),
        # Fields of the wrong kind: the console would fail to show them.
        stored({"account_id": "abc", "amount": "12"}),
        stored({"account_id": "abc", "amount": 12.5}),
        stored({"account_id": "abc", "amount": True}),
        stored({"account_id": "", "amount": 12}),
        stored({"account_id": 7, "amount": 12}),
        stored({"account_id": "abc", "amount": 12}, state=3),
        stored({"account_id": "abc", "amount": 12}, debit_id=["x"]),
    ],
)
def test_an_unreadable_state_is_a_problem(value: str) -> None:
    read = stored_payment("p", value)
    assert isinstance(read, Problem)
    assert (read.check, read.subject) == ("unreadable-state", "p")


@pytest.mark.parametrize(
    ("payment", "debits"),
    [
        (completed(), [debit()]),
        # An earlier lifecycle's charge that was never refunded is the customer's business.
        (completed(), [debit("payment:inv_0"), debit()]),
        (completed(), [debit(), debit("payment:inv_2", refunds=1)]),
        (cancelled(), [debit(refunds=1)]),
        (cancelled(None), []),
        (cancelled(None), [debit("payment:inv_0")]),
    ],
)
def test_agreement_is_clean(payment: StoredPayment, debits: list[PostedDebit]) -> None:
    assert checks(payment, *debits) == []


@pytest.mark.parametrize(
    ("payment", "debits", "expected"),
    [
        (completed(None), [debit()], ["completed-without-debit"]),
        (completed(), [], ["completed-without-debit"]),
        (completed(), [debit("payment:inv_0")], ["completed-without-debit"]),
        (completed(), [debit(refunds=1)], ["completed-but-refunded"]),
        (completed(amount=99), [debit()], ["charge-mismatch"]),
        (completed(), [debit(), debit("payment:inv_1:again")], ["charged-again"]),
        # The ledger answered the debit of an expired lifecycle for the debit id the new one named.
        (completed(lifecycle="inv_2"), [debit()], ["debit-of-another-lifecycle"]),
        (completed(lifecycle=None), [debit()], []),  # stored before lifecycles were named
        (cancelled(lifecycle="inv_2"), [debit(refunds=1)], []),  # a cancel after the window
        (cancelled(lifecycle="inv_1"), [debit(refunds=1)], []),
        (cancelled(), [debit()], ["cancelled-not-refunded"]),
        (cancelled(), [], ["cancelled-without-debit"]),
        (cancelled(), [debit(refunds=1), debit("payment:inv_2")], ["charged-again"]),
        (StoredPayment("p", "PENDING", None, None, None), [], ["unreadable-state"]),
    ],
)
def test_each_disagreement_is_named(
    payment: StoredPayment, debits: list[PostedDebit], expected: list[str]
) -> None:
    assert checks(payment, *debits) == expected


def test_problems_name_their_payment_id_and_debit() -> None:
    other = StoredPayment("q", "COMPLETED", "a", 100, "payment:inv_9")
    problems = payment_problems([completed(), other], {"p": [debit(refunds=1)]})
    assert [(problem.subject, problem.check) for problem in problems] == [
        ("p", "completed-but-refunded"),
        ("q", "completed-without-debit"),
    ]
    assert "payment:inv_1" in problems[0].detail


def test_the_result_is_ok_only_without_problems_and_says_so_in_json_and_text() -> None:
    clean = Reconciliation(problems=(), accounts=3, transfers=4, payment_ids=2, in_flight=1)
    problem = Problem("sum-not-zero", "all accounts", "the balances sum to 1 cents, not 0")
    broken = Reconciliation(problems=(problem,), accounts=3, transfers=4, payment_ids=2, in_flight=0)

    assert clean.ok
    assert clean.describe().startswith("clean: 3 accounts")
    assert not broken.ok
    assert json.loads(json.dumps(broken.to_json())) == {
        "ok": False,
        "problems": [problem.to_json()],
        "checked": {"accounts": 3, "transfers": 4, "payment_ids": 2, "in_flight": 0},
    }
    assert (
        broken.describe().splitlines()[0] == "sum-not-zero: all accounts: the balances sum to 1 cents, not 0"
    )


def test_the_command_exits_2_when_it_cannot_read_restate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()

    status = cli.main(["reconcile", "--admin-port", str(port), "--data-dir", str(tmp_path)])

    assert status == 2
    assert capsys.readouterr().err.startswith("payments: cannot reconcile: ConnectError")
