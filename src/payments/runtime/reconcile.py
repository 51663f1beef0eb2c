"""``payments reconcile``: the ledger and Restate checked against each other.

The ledger's own rules are checked in SQL, each query returning only what breaks its rule, so a
clean ledger of any size sends back nothing but counts: all balances sum to zero, each cached
balance is the sum of its account's entries and its last entry's running balance, every entry's
running balance follows from the one before it, no customer balance is negative, each transfer moves
money between the accounts its kind allows (one opening per account), each posted transfer has two
entries that move its amount out of its debit account and into its credit account (a declined one
none) and no entry is without its transfer, each refund gives back its debit's amount to its
account, no debit has two refunds, and every debit names a payment id. These catch a ledger edited
behind the functions' back (triggers off, rows inserted, moved, swapped or deleted), unless the
editor also rewrote every later entry of every account it touched: no check inside the database
outlives a superuser who rewrites it all consistently.

Restate's side is the stored state of every payment id (read through the admin API's SQL), which
:func:`payment_problems` holds against the ledger's debits of those ids: a COMPLETED id has its
stored debit posted with its charge and unrefunded, and that debit is the one its lifecycle names
(:func:`debit_id_of`), not another lifecycle's; a CANCELLED id that was charged has that debit
refunded; and no id has a posted, unrefunded debit newer than its stored one (a second charge in one
lifecycle). A debit whose id Restate does not know is fine: the id's window expired and its state
was cleared, which is what the ledger is there to outlive.

On a live system a payment can be between its ledger write and Restate's record of it. The ledger is
read in one snapshot, between two reads of Restate's state; an id whose state differs between them,
or that has an invocation under way afterwards, is counted as in flight and not judged. The ledger
writes before Restate stores the state, and the state is stored before the invocation ends, so every
id that is judged was at rest on both sides.

Only this module's own SQL runs here: the runtime does not import the service's ledger.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import httpx

from payments.config import Settings
from payments.domain.state_machine import State, debit_id_of
from payments.runtime.admin import AdminError, Admins

STATE_QUERY: Final = (
    "SELECT service_key, value FROM state WHERE service_name = 'payments' AND key = 'payment'"
)
"""Every payment id's stored state; ``value`` comes back as the hex of the stored JSON's bytes."""
UNDER_WAY: Final = "status NOT IN ('completed', 'scheduled')"
"""The condition on ``sys_invocation`` of an invocation under way (an expiry timer that has not
fired is not one)."""
BUSY_QUERY: Final = (
    "SELECT DISTINCT target_service_key AS payment_id FROM sys_invocation"  # noqa: S608 - constants only
    f" WHERE target_service_name = 'payments' AND {UNDER_WAY}"
)
"""Payment ids with an invocation under way."""
READ_FAILURES: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, AdminError, httpx.HTTPError)
"""What reading the ledger or Restate's admin API raises when either cannot be read."""


STATEMENT_TIMEOUT: Final = "5min"
"""The longest any one check may run before PostgreSQL cancels it and the reconciliation fails."""


class CannotReconcileError(RuntimeError):
    """The ledger or Restate's admin API could not be read."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One mismatch: which rule it breaks, what it concerns (an account, transfer or payment id), how."""

    check: str
    subject: str
    detail: str

    def describe(self) -> str:
        """One line for a terminal."""
        return f"{self.check}: {self.subject}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        """The problem as JSON values."""
        return {"check": self.check, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What a reconciliation checked and what it found; clean when ``problems`` is empty."""

    problems: tuple[Problem, ...]
    accounts: int
    transfers: int
    payment_ids: int
    """Payment ids with a stored state in Restate that were judged."""
    in_flight: int
    """Payment ids left unjudged because a call on them was under way."""

    @property
    def ok(self) -> bool:
        """Whether the ledger and Restate agree."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The result as JSON values (``payments reconcile --json``)."""
        return {
            "ok": self.ok,
            "problems": [problem.to_json() for problem in self.problems],
            "checked": {
                "accounts": self.accounts,
                "transfers": self.transfers,
                "payment_ids": self.payment_ids,
                "in_flight": self.in_flight,
            },
        }

    def describe(self) -> str:
        """The problems, one a line, then a summary line."""
        summary = (f"{len(self.problems)} problem(s)" if self.problems else "clean") + (
            f": {self.accounts} accounts, {self.transfers} transfers, {self.payment_ids} payment ids"
            f" checked, {self.in_flight} in flight"
        )
        return "\n".join([*(problem.describe() for problem in self.problems), summary])


@dataclass(frozen=True, slots=True)
class StoredPayment:
    """What Restate stores for a payment id, as far as the money goes."""

    payment_id: str
    state: str
    account_id: str | None
    amount: int | None
    debit_id: str | None
    lifecycle: str | None = None


@dataclass(frozen=True, slots=True)
class PostedDebit:
    """A posted payment debit in the ledger, and how many refunds name it."""

    transfer_id: str
    account_id: str
    amount: int
    refunds: int


def stored_payment(payment_id: str, value_hex: str) -> StoredPayment | Problem:
    """The stored state of ``payment_id`` from the admin API's hex ``value``, or why it cannot be read."""
    try:
        stored = json.loads(bytes.fromhex(value_hex))
        charge = stored["charge"] or {}
        payment = StoredPayment(
            payment_id,
            stored["state"],
            charge.get("account_id"),
            charge.get("amount"),
            stored.get("debit_id"),
            stored.get("lifecycle"),
        )
        _check_types(payment)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return Problem(
            "unreadable-state", payment_id, f"Restate's stored payment is not readable ({error!r})"
        )
    return payment


def _check_types(payment: StoredPayment) -> None:
    """Raise TypeError unless every field holds what the service stores there."""
    texts = (payment.account_id, payment.debit_id, payment.lifecycle)
    if not isinstance(payment.state, str) or not all(
        text is None or (text and isinstance(text, str)) for text in texts
    ):
        raise TypeError("state, account_id, debit_id and lifecycle must be non-empty strings")
    if payment.amount is not None and (
        not isinstance(payment.amount, int) or isinstance(payment.amount, bool)
    ):
        raise TypeError(f"amount must be an integer, not {payment.amount!r}")


def payment_problems(
    payments: Iterable[StoredPayment], debits: Mapping[str, Sequence[PostedDebit]]
) -> list[Problem]:
    """Restate's payment states held against ``debits``: each id's posted debits, oldest first."""
    problems: list[Problem] = []
    for payment in payments:
        problems += _problems_of(payment, debits.get(payment.payment_id, ()))
    return problems


def _problems_of(payment: StoredPayment, debits: Sequence[PostedDebit]) -> list[Problem]:
    def problem(check: str, detail: str) -> list[Problem]:
        return [Problem(check, payment.payment_id, detail)]

    if payment.state not in (State.COMPLETED, State.CANCELLED):
        return problem("unreadable-state", f"Restate stores the unknown state {payment.state!r}")
    if payment.debit_id is None or payment.account_id is None:
        if payment.state == State.COMPLETED:
            return problem("completed-without-debit", "Restate holds it COMPLETED with no charge or debit id")
        return []  # cancelled before any payment
    index = next((i for i, debit in enumerate(debits) if debit.transfer_id == payment.debit_id), None)
    if index is None:
        return problem(
            f"{payment.state.lower()}-without-debit",
            f"its debit {payment.debit_id} is not a posted payment debit of this id in the ledger",
        )
    debit = debits[index]
    found: list[Problem] = []
    # A cancel after the window refunds a debit of an earlier lifecycle: only COMPLETED is bound to its own.
    own = None if payment.lifecycle is None else debit_id_of(payment.lifecycle)
    if payment.state == State.COMPLETED and own not in (None, debit.transfer_id):
        found += problem(
            "debit-of-another-lifecycle",
            f"its debit {debit.transfer_id} was not made in its lifecycle {payment.lifecycle}, whose"
            f" debit would be {own}: the ledger answered an earlier charge, and nothing was charged now",
        )
    if (debit.account_id, debit.amount) != (payment.account_id, payment.amount):
        found += problem(
            "charge-mismatch",
            f"Restate's charge is {payment.amount} cents from {payment.account_id}, its debit"
            f" {debit.transfer_id} took {debit.amount} cents from {debit.account_id}",
        )
    if payment.state == State.COMPLETED and debit.refunds:
        found += problem("completed-but-refunded", f"its debit {debit.transfer_id} was refunded")
    if payment.state == State.CANCELLED and not debit.refunds:
        found += problem("cancelled-not-refunded", f"its debit {debit.transfer_id} has no refund")
    again = [later.transfer_id for later in debits[index + 1 :] if not later.refunds]
    if again:
        found += problem(
            "charged-again",
            f"unrefunded debit(s) {', '.join(again)} after {debit.transfer_id} in the same lifecycle",
        )
    return found


@dataclass(frozen=True, slots=True)
class _LedgerCheck:
    """A rule of the ledger: ``sql`` returns one row (subject, detail) per breach."""

    name: str
    sql: str


LEDGER_CHECKS: Final = (
    _LedgerCheck(
        "sum-not-zero",
        """
        SELECT 'all accounts', format('the balances sum to %s cents, not 0', sum(balance))
        FROM ledger_accounts HAVING sum(balance) <> 0
        """,
    ),
    _LedgerCheck(
        "cached-balance",
        """
        SELECT a.id, format(
            'cached balance %s, its entries sum to %s, its last entry''s running balance is %s',
            a.balance, coalesce(e.total, 0), coalesce(last.balance_after::text, 'none'))
        FROM ledger_accounts a
        LEFT JOIN (
            SELECT account_id, sum(amount) AS total, max(id) AS last_id
            FROM ledger_entries GROUP BY account_id
        ) e ON e.account_id = a.id
        LEFT JOIN ledger_entries last ON last.id = e.last_id
        WHERE a.balance <> coalesce(e.total, 0) OR a.balance <> coalesce(last.balance_after, 0)
        """,
    ),
    _LedgerCheck(
        "running-balance",
        """
        SELECT account_id, format(
            'entry %s (transfer %s) moves %s cents and says %s after, but the entry before it says %s',
            id, transfer_id, amount, balance_after, coalesce(previous::text, 'nothing (0)'))
        FROM (
            SELECT id, account_id, transfer_id, amount, balance_after,
                lag(balance_after) OVER (PARTITION BY account_id ORDER BY id) AS previous
            FROM ledger_entries
        ) e
        WHERE balance_after <> coalesce(previous, 0) + amount
        """,
    ),
    _LedgerCheck(
        "transfer-shape",
        """
        SELECT id, format('a %s from %s to %s: not the accounts a %s moves money between',
            kind, debit_account, credit_account, kind)
        FROM ledger_transfers
        WHERE NOT ledger_transfer_fits(id, kind, debit_account, credit_account)
        """,
    ),
    _LedgerCheck(
        "entry-mismatch",
        """
        SELECT e.transfer_id, format('entry %s moves %s cents on %s, which %s', e.id, e.amount, e.account_id,
            coalesce(format('the %s %s of %s cents from %s to %s does not',
                t.status, t.kind, t.amount, t.debit_account, t.credit_account), 'no transfer explains'))
        FROM ledger_entries e LEFT JOIN ledger_transfers t ON t.id = e.transfer_id
        WHERE t.id IS NULL OR t.status <> 'posted' OR NOT (
            (e.account_id = t.debit_account AND e.amount = -t.amount)
            OR (e.account_id = t.credit_account AND e.amount = t.amount))
        """,
    ),
    _LedgerCheck(
        "negative-balance",
        """
        SELECT id, format('customer balance %s cents', balance)
        FROM ledger_accounts WHERE kind = 'customer' AND balance < 0
        """,
    ),
    _LedgerCheck(
        "unbalanced-transfer",
        """
        SELECT t.id, format(
            '%s %s of %s cents has %s entries summing to %s, moving %s to %s cents',
            t.status, t.kind, t.amount, count(e.id), coalesce(sum(e.amount), 0),
            coalesce(min(abs(e.amount)), 0), coalesce(max(abs(e.amount)), 0))
        FROM ledger_transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id
        GROUP BY t.id
        HAVING count(e.id) <> CASE WHEN t.status = 'posted' THEN 2 ELSE 0 END
            OR coalesce(sum(e.amount), 0) <> 0
            OR (t.status = 'posted' AND (min(abs(e.amount)) <> t.amount OR max(abs(e.amount)) <> t.amount))
        """,
    ),
    _LedgerCheck(
        "refund-mismatch",
        """
        SELECT r.id, format(
            'refunds %s cents from %s to %s for payment %s, but %s is %s',
            r.amount, r.debit_account, r.credit_account, r.payment_id, r.refund_of,
            coalesce(format('a %s %s of %s cents from %s to %s for payment %s',
                d.status, d.kind, d.amount, d.debit_account, d.credit_account, d.payment_id),
                'not in the ledger'))
        FROM ledger_transfers r LEFT JOIN ledger_transfers d ON d.id = r.refund_of
        WHERE r.kind = 'refund' AND (
            d.id IS NULL OR d.kind <> 'payment' OR d.status <> 'posted' OR d.amount <> r.amount
            OR d.debit_account <> r.credit_account OR d.credit_account <> r.debit_account
            OR d.payment_id IS DISTINCT FROM r.payment_id)
        """,
    ),
    _LedgerCheck(
        "refunded-twice",
        """
        SELECT refund_of, format('refunded by %s', string_agg(id, ', ' ORDER BY id))
        FROM ledger_transfers WHERE kind = 'refund' GROUP BY refund_of HAVING count(*) > 1
        """,
    ),
    _LedgerCheck(
        "refundable-mismatch",
        """
        SELECT a.id, format(
            'counts %s refundable cents, its unrefunded debits hold %s', a.refundable, coalesce(d.total, 0))
        FROM ledger_accounts a
        LEFT JOIN (
            SELECT t.debit_account, sum(t.amount) AS total
            FROM ledger_transfers t
            WHERE t.kind = 'payment' AND t.status = 'posted'
              AND NOT EXISTS (SELECT FROM ledger_transfers r WHERE r.refund_of = t.id)
            GROUP BY t.debit_account
        ) d ON d.debit_account = a.id
        WHERE a.kind = 'customer' AND a.refundable <> coalesce(d.total, 0)
        """,
    ),
    _LedgerCheck(
        "debit-without-payment",
        """
        SELECT id, format('a %s debit of %s cents from %s with no payment id', status, amount, debit_account)
        FROM ledger_transfers WHERE kind = 'payment' AND payment_id IS NULL
        """,
    ),
)

_CHARGED_TWICE_SQL: Final = """
    SELECT payment_id, format(
        'debits %s and %s are %s apart, less than one %s s window', previous, id,
        created_at - previous_at, $1::float8)
    FROM (
        SELECT payment_id, id, created_at, lag(id) OVER w AS previous, lag(created_at) OVER w AS previous_at
        FROM ledger_transfers WHERE kind = 'payment' AND status = 'posted'
        WINDOW w AS (PARTITION BY payment_id ORDER BY created_at, id)
    ) debits
    WHERE previous IS NOT NULL AND created_at - previous_at < make_interval(secs => $1::float8)
"""
"""Two debits of one payment id closer than a window: a debit only happens in NEW, and the id is NEW
again only once the timer armed after the debit fired, a whole window later. So this is a charge
twice in one lifecycle, whatever Restate remembers (a debit committed by an attempt whose result was
never journaled would be older than the stored one)."""
CLOCK_SLACK_SECONDS: Final = 1.0
"""Allowance for the clocks of restate-server (the timers) and PostgreSQL (the debits' times)."""

_DEBITS_SQL: Final = """
    SELECT t.payment_id, t.id, t.debit_account, t.amount,
        (SELECT count(*) FROM ledger_transfers r WHERE r.refund_of = t.id) AS refunds
    FROM ledger_transfers t
    WHERE t.kind = 'payment' AND t.status = 'posted' AND t.payment_id = ANY($1::text[])
    ORDER BY t.payment_id, t.created_at, t.id
"""
"""The posted debits of the given payment ids, oldest first, in the ledger's own order of charges
(the order in which a cancel after the window finds the last one)."""


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What one snapshot of the ledger says: its breaches, its size, and the debits asked for."""

    problems: list[Problem]
    accounts: int
    transfers: int
    debits: dict[str, list[PostedDebit]]


async def read_ledger(url: str, payment_ids: Sequence[str], window_seconds: float) -> LedgerFacts:
    """The ledger's breaches and the debits of ``payment_ids``, all from one snapshot."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            # A role may default to a statement timeout (the console's 10 s) that a whole ledger outlasts;
            # no check may run unbounded either.
            await connection.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            problems = [
                Problem(check.name, subject, detail)
                for check in LEDGER_CHECKS
                for subject, detail in await connection.fetch(check.sql)
            ]
            lifecycle = window_seconds - min(CLOCK_SLACK_SECONDS, window_seconds / 4)
            problems += [
                Problem("charged-twice", subject, detail)
                for subject, detail in await connection.fetch(_CHARGED_TWICE_SQL, lifecycle)
            ]
            accounts = await connection.fetchval("SELECT count(*) FROM ledger_accounts")
            transfers = await connection.fetchval("SELECT count(*) FROM ledger_transfers")
            debits: dict[str, list[PostedDebit]] = {}
            for row in await connection.fetch(_DEBITS_SQL, list(payment_ids)):
                debits.setdefault(row["payment_id"], []).append(
                    PostedDebit(row["id"], row["debit_account"], row["amount"], row["refunds"])
                )
    finally:
        await connection.close()
    return LedgerFacts(problems, accounts, transfers, debits)


async def _stored_states(admins: Admins) -> dict[str, str]:
    return {row["service_key"]: row["value"] for row in await admins.query(STATE_QUERY)}


async def reconcile(settings: Settings, ledger_url: str | None = None) -> Reconciliation:
    """Check the ledger and Restate (any node's admin API that answers) against each other.

    The ledger is read at ``ledger_url``, by default ``settings.ledger_url`` (the console reads it as
    its read-only role). Raises :class:`CannotReconcileError` when either cannot be read.
    """
    try:
        async with contextlib.aclosing(Admins.of(settings)) as admins:
            before = await _stored_states(admins)
            ledger = await read_ledger(
                ledger_url or settings.ledger_url, sorted(before), settings.expiry_seconds
            )
            after = await _stored_states(admins)
            busy = {row["payment_id"] for row in await admins.query(BUSY_QUERY)}
    except READ_FAILURES as error:
        raise CannotReconcileError(f"cannot reconcile: {type(error).__name__}: {error}") from error
    at_rest = sorted(p for p, value in before.items() if after.get(p) == value and p not in busy)
    problems = list(ledger.problems)
    payments: list[StoredPayment] = []
    for payment_id in at_rest:
        read = stored_payment(payment_id, before[payment_id])
        if isinstance(read, Problem):
            problems.append(read)
        else:
            payments.append(read)
    problems += payment_problems(payments, ledger.debits)
    return Reconciliation(
        problems=tuple(problems),
        accounts=ledger.accounts,
        transfers=ledger.transfers,
        payment_ids=len(at_rest),
        in_flight=len(before) - len(at_rest),
    )
