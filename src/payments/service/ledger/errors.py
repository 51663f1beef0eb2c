"""What the ledger refuses.

Besides these: a deposit past the balance limit (the domain's ``DepositRefusedError``).
"""

from __future__ import annotations


class LedgerError(Exception):
    """A request the ledger's state refuses; nothing was recorded."""


class AccountNotFoundError(LedgerError):
    """The account was never opened, and the call did not ask to open it."""


class TransferConflictError(LedgerError):
    """The transfer id is taken by a transfer with other parameters."""


class DebitNotFoundError(LedgerError):
    """No posted payment debit has the id a refund names."""


class LedgerFaultError(LedgerError):
    """PostgreSQL refused a statement for a reason that retrying will not change.

    A data or integrity error, a missing table or privilege, a bug in the ledger's SQL: anything but
    a connection that failed or a server that is unavailable for now (those are raised unchanged,
    for the caller to retry).
    """


class LedgerArgumentError(LedgerError, ValueError):
    """An argument the ledger refuses before any round trip; the message names it."""
