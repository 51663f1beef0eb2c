"""The ledger: every movement of money, double entry, in PostgreSQL (the system of record)."""

from payments.domain.balances import DepositRefusedError
from payments.service.ledger.errors import (
    AccountNotFoundError,
    DebitNotFoundError,
    LedgerArgumentError,
    LedgerError,
    LedgerFaultError,
    TransferConflictError,
)
from payments.service.ledger.ledger import Ledger
from payments.service.ledger.records import Balance, Debit, Deposit, Entry, Refund, Statement, Withdrawal

__all__ = [
    "AccountNotFoundError",
    "Balance",
    "Debit",
    "DebitNotFoundError",
    "Deposit",
    "DepositRefusedError",
    "Entry",
    "Ledger",
    "LedgerArgumentError",
    "LedgerError",
    "LedgerFaultError",
    "Refund",
    "Statement",
    "TransferConflictError",
    "Withdrawal",
]
