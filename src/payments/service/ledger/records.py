"""What the ledger answers: small frozen records of JSON values.

The service journals every ledger call's result through Restate's ``ctx.run``, so each record turns
into a dict of JSON values (:meth:`to_json`) and back (:meth:`from_json`); times are ISO 8601 strings
in UTC, never ``datetime`` objects.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Literal, Self

JsonValue = str | int | None
"""The value of a flat record's field."""


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC, the way every record spells a time."""
    return moment.astimezone(UTC).isoformat()


@dataclasses.dataclass(frozen=True, slots=True)
class _Flat:
    """A record whose fields are all JSON values."""

    def to_json(self) -> dict[str, JsonValue]:
        """The record as a dict of its fields."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record :meth:`to_json` gave ``data`` for."""
        return cls(**data)


@dataclasses.dataclass(frozen=True, slots=True)
class Balance(_Flat):
    """An account's balance in cents: after the transfer asked for, or now for a read."""

    account_id: str
    balance: int


@dataclasses.dataclass(frozen=True, slots=True)
class Deposit(_Flat):
    """A deposit's result: the account's balance now, and whether the ledger already held the deposit."""

    account_id: str
    balance: int
    repeated: bool = False
    """True when the transfer id was taken by this same deposit before: nothing was credited now.
    (A result journaled before this field existed has none: it was the first deposit.)"""


@dataclasses.dataclass(frozen=True, slots=True)
class Withdrawal(_Flat):
    """A payment's debit: posted, or declined for want of funds (recorded all the same)."""

    transfer_id: str
    status: Literal["posted", "declined"]
    balance: int | None
    """The account's balance right after the debit; None when declined."""

    @property
    def posted(self) -> bool:
        """Whether the money was taken."""
        return self.status == "posted"


@dataclasses.dataclass(frozen=True, slots=True)
class Refund(_Flat):
    """The refund of a debit: the first one recorded, whichever transfer id asked for it."""

    transfer_id: str
    debit_id: str
    account_id: str
    amount: int
    balance: int
    """The account's balance right after the refund."""


@dataclasses.dataclass(frozen=True, slots=True)
class Debit(_Flat):
    """A posted payment debit."""

    transfer_id: str
    account_id: str
    amount: int
    payment_id: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class Entry(_Flat):
    """One side of a transfer: what it did to one account."""

    entry_id: int
    transfer_id: str
    account_id: str
    kind: Literal["opening", "deposit", "payment", "refund"]
    amount: int
    """Signed: negative when the money left the account."""
    payment_id: str | None
    created_at: str
    balance_after: int


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """A page of an account's entries, newest first."""

    account_id: str
    entries: tuple[Entry, ...]
    next_before: int | None
    """The cursor of the next (older) page, or None on the last page."""

    def to_json(self) -> dict[str, Any]:
        """The page as a dict of JSON values, its entries a list of dicts."""
        return {
            "account_id": self.account_id,
            "entries": [entry.to_json() for entry in self.entries],
            "next_before": self.next_before,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The page :meth:`to_json` gave ``data`` for."""
        return cls(
            data["account_id"],
            tuple(Entry.from_json(entry) for entry in data["entries"]),
            data["next_before"],
        )
