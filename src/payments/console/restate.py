"""What the console reads from Restate: payment ids' stored states and our invocations.

Through the admin API's SQL, which takes no bound parameters: the only values put into a query are
ids that passed the contract's id rule, quoted by :func:`literal` all the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from payments.domain.state_machine import State
from payments.runtime.admin import Admins
from payments.runtime.reconcile import STATE_QUERY, UNDER_WAY, Problem, StoredPayment, stored_payment

SERVICES: Final = ("payments", "accounts")
"""Our virtual objects, whose invocations the console shows."""
STATES: Final = (State.COMPLETED, State.CANCELLED)
"""The states Restate stores for a payment id; an id with none is NEW."""
STUCK: Final = ("backing-off", "paused")
"""An invocation's statuses while it fails and waits: retrying after a failure, or paused after the last."""
UNFINISHED_LIMIT: Final = 50
INVOCATIONS_LIMIT: Final = 100
_INVOCATION_COLUMNS: Final = "*"
"""All of them: Restate 1.7 leaves ``scheduled_start_at`` out when it is named in a projection."""


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


_OURS: Final = f"target_service_name IN ({', '.join(literal(name) for name in SERVICES)})"


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation Restate holds: its target, where it stands, and its last failure if any."""

    invocation_id: str
    service: str
    key: str
    handler: str
    status: str
    created_at: str
    scheduled_start_at: str | None
    """When a delayed call (an expiry timer) runs."""
    attempts: int
    next_retry_at: str | None
    last_failure: str | None
    last_failure_code: str | None
    """Restate's code for it, such as ``RT0007``."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Invocation:
        """The invocation in a row of the admin API's ``sys_invocation``."""
        return cls(
            invocation_id=row["id"],
            service=row["target_service_name"],
            key=row["target_service_key"] or "",
            handler=row["target_handler_name"],
            status=row["status"],
            created_at=row["created_at"],
            scheduled_start_at=row.get("scheduled_start_at"),
            attempts=row.get("retry_count") or 0,
            next_retry_at=row.get("next_retry_at"),
            last_failure=_without_stack(row.get("last_failure")),
            last_failure_code=row.get("last_failure_error_code"),
        )

    @property
    def stuck(self) -> bool:
        """Whether it fails and waits (:data:`STUCK`)."""
        return self.status in STUCK


def _without_stack(failure: str | None) -> str | None:
    """A failure as Restate holds it, without the Python stack the SDK adds to its message.

    A page shows what failed; the stack, dozens of lines, is in the service's log and Restate's UI.
    """
    return None if failure is None else failure.partition("\nTraceback (most recent call last):")[0]


class RestateView:
    """Restate's side of the payments, read through the admin APIs of its nodes (any that answers)."""

    def __init__(self, admins: Admins) -> None:
        self._query = admins.query

    async def state_counts(self) -> dict[str, int]:
        """How many payment ids Restate holds in each stored state."""
        # The state is JSON as the SDK writes it, so a state reads `"state": "COMPLETED"`.
        needles = {state: literal(json.dumps({"state": state})[1:-1]) for state in STATES}
        cases = " ".join(
            f"WHEN strpos(value_utf8, {needle}) > 0 THEN {literal(state)}"
            for state, needle in needles.items()
        )
        rows = await self._query(
            f"SELECT CASE {cases} ELSE 'other' END AS state, count(*) AS ids FROM state"  # noqa: S608 - literal()
            " WHERE service_name = 'payments' AND key = 'payment' GROUP BY 1"
        )
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["ids"] for row in rows})
        return counts

    async def stored_payment(self, payment_id: str) -> StoredPayment | Problem | None:
        """What Restate stores for ``payment_id``, or why it cannot be read; None: nothing (NEW)."""
        rows = await self._query(f"{STATE_QUERY} AND service_key = {literal(payment_id)}")
        return stored_payment(payment_id, rows[0]["value"]) if rows else None

    async def invocations_of(self, payment_id: str) -> list[Invocation]:
        """The invocations Restate holds for ``payment_id``'s object, newest first."""
        rows = await self._query(
            f"SELECT {_INVOCATION_COLUMNS} FROM sys_invocation"  # noqa: S608 - values through literal()
            f" WHERE target_service_name = 'payments' AND target_service_key = {literal(payment_id)}"
            f" ORDER BY created_at DESC LIMIT {INVOCATIONS_LIMIT}"
        )
        return [Invocation.from_row(row) for row in rows]

    async def unfinished(self) -> tuple[list[Invocation], dict[str, int]]:
        """Our invocations under way (the stuck ones first), and how many there are of each status.

        A delayed call that waits for its time (an expiry timer) is ``scheduled``, not under way.
        """
        under_way = f"{_OURS} AND {UNDER_WAY}"
        counts = {
            row["status"]: row["n"]
            for row in await self._query(
                f"SELECT status, count(*) AS n FROM sys_invocation WHERE {under_way} GROUP BY status"  # noqa: S608 - constants only
            )
        }
        stuck = ", ".join(literal(status) for status in STUCK)
        rows = await self._query(
            f"SELECT {_INVOCATION_COLUMNS} FROM sys_invocation WHERE {under_way}"  # noqa: S608 - constants only
            f" ORDER BY CASE WHEN status IN ({stuck}) THEN 0 ELSE 1 END, created_at LIMIT {UNFINISHED_LIMIT}"
        )
        return [Invocation.from_row(row) for row in rows], counts
