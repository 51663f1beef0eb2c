"""What the console reads from Restate's admin SQL: quoted literals, invocation rows, the node it asks."""

from __future__ import annotations

from typing import Any

import pytest

from payments.console.restate import Invocation, RestateView, literal
from payments.runtime.admin import Admins
from tests.helpers import NodeAdmin

ROW: dict[str, Any] = {
    "id": "inv_1abc",
    "target_service_name": "payments",
    "target_service_key": "p-1",
    "target_handler_name": "makePayment",
    "status": "backing-off",
    "created_at": "2024-05-01T12:00:00.000Z",
}


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("p-1", "'p-1'"),
        ("", "''"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("x' OR '1'='1", "'x'' OR ''1''=''1'"),
        ("a\\'b", "'a\\''b'"),
    ],
)
def test_a_literal_is_quoted_with_its_quotes_doubled(text: str, quoted: str) -> None:
    assert literal(text) == quoted


def test_an_invocation_without_its_optional_columns_has_no_attempts_and_no_failure() -> None:
    invocation = Invocation.from_row(ROW)

    assert invocation == Invocation(
        invocation_id="inv_1abc",
        service="payments",
        key="p-1",
        handler="makePayment",
        status="backing-off",
        created_at="2024-05-01T12:00:00.000Z",
        scheduled_start_at=None,
        attempts=0,
        next_retry_at=None,
        last_failure=None,
        last_failure_code=None,
    )
    assert invocation.stuck


def test_an_invocation_reads_every_optional_column() -> None:
    row = {
        **ROW,
        "status": "scheduled",
        "modified_at": "2024-05-01T12:00:01Z",
        "scheduled_start_at": "2024-05-02T12:00:00Z",
        "retry_count": 3,
        "next_retry_at": "2024-05-01T12:00:05Z",
        "last_failure": "ledger down",
        "last_failure_error_code": "RT0007",
    }

    invocation = Invocation.from_row(row)

    assert (
        invocation.scheduled_start_at,
        invocation.attempts,
        invocation.next_retry_at,
        invocation.last_failure,
        invocation.last_failure_code,
    ) == ("2024-05-02T12:00:00Z", 3, "2024-05-01T12:00:05Z", "ledger down", "RT0007")
    assert not invocation.stuck


def test_an_unkeyed_invocation_and_null_columns_read_as_empty() -> None:
    row = {**ROW, "target_service_key": None, "retry_count": None, "last_failure": None}

    invocation = Invocation.from_row(row)

    assert (invocation.key, invocation.attempts, invocation.last_failure) == ("", 0, None)


@pytest.mark.parametrize(("status", "stuck"), [("paused", True), ("backing-off", True), ("running", False)])
def test_failing_invocations_are_stuck(status: str, stuck: bool) -> None:
    assert Invocation.from_row({**ROW, "status": status}).stuck is stuck


def test_a_failure_is_shown_without_the_python_stack_the_sdk_adds() -> None:
    failure = (
        "[500 Internal] RaiseError('the ledger is down')\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/payments/handlers.py", line 154, in answered\n'
        "    return await action()\n"
        "asyncpg.exceptions.RaiseError: the ledger is down\n"
    )

    invocation = Invocation.from_row({**ROW, "last_failure": failure})

    assert invocation.last_failure == "[500 Internal] RaiseError('the ledger is down')"


def test_a_failure_of_several_lines_without_a_stack_is_kept_whole() -> None:
    failure = "[500 Internal] duplicate key\nDETAIL: Key (id)=(x) already exists."

    assert Invocation.from_row({**ROW, "last_failure": failure}).last_failure == failure


@pytest.mark.anyio
async def test_counts_by_state_name_every_state() -> None:
    view = RestateView(Admins([NodeAdmin([{"state": "COMPLETED", "ids": 2}])]))

    assert await view.state_counts() == {"COMPLETED": 2, "CANCELLED": 0}
