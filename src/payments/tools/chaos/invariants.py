"""What must hold after a chaos run, checked over the calls it recorded and the final state it read.

Pure logic: no I/O, no clock, no Restate. :mod:`payments.tools.chaos.run` records every call and what
it finally got back, lets the system settle, reads each payment's status and each account's balance
through the public API and every transfer of the ledger from its database, and hands all of it to
:func:`find_violations`.

Ids expire: the first call that gives an id state (a completion, or a cancel of a NEW id) starts a
lifecycle and arms a timer that ends it, clearing the state, no sooner than the expiry window later;
an id is charged at most once per lifecycle. A cancel acts on the lifecycle it lands in: it refunds
that lifecycle's charge, or, landing in a NEW one (the id's window expired), it refunds the id's last
unrefunded charge of an earlier lifecycle, if any, and starts a lifecycle of its own, CANCELLED with
that charge or with none. A client cannot see when a timer fires, so the rules over answers only
ever compare two calls, or a call and the final state, that the times prove to be in one lifecycle:
each call ran somewhere between its first send and its answer, and a lifecycle lasts at least the
window from its start, which the answers bound from below (see :meth:`_History.floor`).

The ledger keeps what expiry forgets, every movement of money with its time, so the money is
checked exactly: each balance against the ledger's transfers, and each transfer against the calls
that must explain it (:func:`_check_ledger`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from payments.domain.state_machine import Charge, Outcome, State
from payments.service.answers import BalanceAnswer, DepositAnswer, PaymentAnswer

CallKind = Literal["makePayment", "cancelPayment", "deposit"]
PAY: Final = "makePayment"
CANCEL: Final = "cancelPayment"
DEPOSIT: Final = "deposit"
CONFLICT_STATUS: Final = 409
PAYMENT_KIND: Final = "payment"
REFUND_KIND: Final = "refund"
DEPOSIT_KIND: Final = "deposit"
TIMER_SLACK_SECONDS: Final = 0.25
"""Taken off the expiry window: Restate's timers run on the wall clock, the calls are timed on the
monotonic one, and a timer must not look early because the two drift apart a little."""


@dataclass(frozen=True, slots=True)
class Request:
    """One call as a client means it: the target (payment id, or account of a deposit) and body."""

    kind: CallKind
    target: str
    account_id: str | None = None
    amount: int | None = None
    idempotency_key: str | None = None

    @property
    def charge(self) -> Charge | None:
        """The body of a makePayment as a charge; None for other calls."""
        if self.kind != PAY or self.account_id is None or self.amount is None:
            return None
        return Charge(self.account_id, self.amount)

    def describe(self) -> str:
        """The call in one short phrase, e.g. ``makePayment p7 (a1, 120)``."""
        if self.kind == PAY:
            return f"{PAY} {self.target} ({self.account_id}, {self.amount})"
        if self.kind == DEPOSIT:
            return f"{DEPOSIT} {self.target} {self.amount} (key {self.idempotency_key})"
        return f"{self.kind} {self.target}"


@dataclass(frozen=True, slots=True)
class Call:
    """A request as sent, retries included, and the answer it finally got.

    Times are seconds since the storm began. ``status`` is None when the client gave up without an
    answer; ``answer`` is set for a 200 only. ``lost_attempts`` counts the attempts that failed after
    the request may have reached Restate (a connection broken mid-call, a 5xx): each of them may have
    run, unseen; an attempt refused before anything ran (no connection, a 404) is not one.
    """

    request: Request
    sent_at: float
    answered_at: float | None
    attempts: int
    status: int | None
    answer: PaymentAnswer | BalanceAnswer | None = None
    error: str | None = None
    lost_attempts: int = 0

    @property
    def payment(self) -> PaymentAnswer | None:
        """The answer of a payment call that succeeded."""
        return self.answer if isinstance(self.answer, PaymentAnswer) else None

    def describe(self) -> str:
        """The call and its answer on one line, for a violation report."""
        sent = f"+{self.sent_at:7.3f}s {self.request.describe()}"
        answer = self.payment
        if answer is not None:
            money = ", money moved" if answer.moneyMoved else ""
            result = f"200 {answer.state} {answer.outcome} ({answer.accountId}, {answer.amount}){money}"
        elif isinstance(self.answer, BalanceAnswer):
            result = f"200 balance {self.answer.balance}"
        elif self.status is None:
            result = f"no answer ({self.error})"
        else:
            result = f"{self.status} {self.error}"
        when = "never" if self.answered_at is None else f"+{self.answered_at:.3f}s"
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        if self.lost_attempts:
            tries += f", {self.lost_attempts} lost"
        return f"{sent} -> {result} [{when}, {tries}]"


@dataclass(frozen=True, slots=True)
class Violation:
    """One invariant that does not hold, with the calls that show it."""

    rule: str
    message: str
    payment_id: str | None = None
    account_id: str | None = None
    suspects: tuple[str, ...] = ()
    """For a balance: the payment ids whose amounts add up to the difference; their calls are listed."""
    calls: tuple[Call, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    """The ledger's transfers that show it."""

    def describe(self) -> str:
        """The violation, every call and every ledger transfer behind it, one per line."""
        where = ", ".join(
            part
            for part in (
                f"payment {self.payment_id}" if self.payment_id else "",
                f"account {self.account_id}" if self.account_id else "",
            )
            if part
        )
        lines = [f"VIOLATION {self.rule} ({where}): {self.message}"]
        if self.suspects:
            lines.append(f"  suspects: {', '.join(self.suspects)}")
        lines.extend(f"  {call.describe()}" for call in self.calls)
        lines.extend(f"  ledger: {transfer.describe()}" for transfer in self.transfers)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of the ledger, seen from its customer account."""

    transfer_id: str
    kind: str
    """``opening``, ``deposit``, ``payment`` or ``refund``."""
    account_id: str
    """The customer account: the one a payment debits, or an opening, deposit or refund credits."""
    amount: int
    at: float
    """When the database recorded it, in seconds since the storm began."""
    posted: bool = True
    """False for a declined payment, which moved nothing."""
    payment_id: str | None = None
    refund_of: str | None = None
    balance_after: int | None = None
    """The customer account's balance right after it; None when declined."""

    @property
    def charge(self) -> Charge:
        """The account and amount it moved."""
        return Charge(self.account_id, self.amount)

    def describe(self) -> str:
        """The transfer in one short phrase, e.g. ``payment payment:inv_1 p7 (a1, 120) at +3.250s``."""
        what = f"{self.kind} {self.transfer_id}"
        if self.payment_id:
            what += f" {self.payment_id}"
        if self.refund_of:
            what += f" of {self.refund_of}"
        status = "" if self.posted else ", declined"
        balance = "" if self.balance_after is None else f", balance after {self.balance_after}"
        return f"{what} {_show(self.charge)} at +{self.at:.3f}s{status}{balance}"


@dataclass(frozen=True, slots=True)
class LedgerState:
    """What the ledger holds after the run: its transfers, and each customer account's balance."""

    transfers: tuple[Transfer, ...] = ()
    balances: Mapping[str, int] = field(default_factory=dict)
    """The cached balance of every customer account."""
    entry_sums: Mapping[str, int] = field(default_factory=dict)
    """The sum of every customer account's entries."""

    @property
    def payment_ids(self) -> set[str]:
        """The payment ids that have a transfer."""
        return {t.payment_id for t in self.transfers if t.payment_id is not None}

    def of_payment(self, payment_id: str) -> tuple[Transfer, ...]:
        """The transfers of one payment id, in the order the ledger recorded them."""
        return tuple(sorted((t for t in self.transfers if t.payment_id == payment_id), key=_at))

    def debits(self, payment_id: str) -> list[Transfer]:
        """The posted payment debits of one payment id."""
        return [t for t in self.of_payment(payment_id) if t.kind == PAYMENT_KIND and t.posted]

    def transfer(self, transfer_id: str | None) -> Transfer | None:
        """The transfer with that id, if the ledger holds it."""
        return next((t for t in self.transfers if t.transfer_id == transfer_id), None)

    def refund_of(self, debit_id: str) -> Transfer | None:
        """The refund of a debit, if it has one."""
        return next((t for t in self.transfers if t.refund_of == debit_id), None)


@dataclass(frozen=True, slots=True)
class Expiry:
    """The expiry window of the run's payment ids, and when the final state had been read."""

    seconds: float
    read_by: float
    """Seconds since the storm began."""

    @property
    def window(self) -> float:
        """The shortest a lifecycle can look, on the calls' clock."""
        return max(0.0, self.seconds - TIMER_SLACK_SECONDS)


NEVER: Final = Expiry(math.inf, 0.0)
"""No id expires during the run: each has one lifecycle."""


def find_violations(
    opening_balance: int,
    calls: Iterable[Call],
    statuses: Mapping[str, PaymentAnswer],
    balances: Mapping[str, int],
    *,
    ledger: LedgerState,
    expiry: Expiry = NEVER,
) -> list[Violation]:
    """Every violation of the contract that the calls, the final state and the ledger show.

    ``statuses`` holds the final getStatus of every payment id that received a call, ``balances``
    the final balance of every account read through the ingress, and ``ledger`` every transfer.
    """
    by_payment: dict[str, list[Call]] = defaultdict(list)
    deposits: list[Call] = []
    for call in calls:
        if call.request.kind == DEPOSIT:
            deposits.append(call)
        else:
            by_payment[call.request.target].append(call)
    violations: list[Violation] = []
    histories: dict[str, _History] = {}
    for payment_id, received in sorted(by_payment.items()):
        final = statuses.get(payment_id)
        if final is None:
            violations.append(Violation("no-final-status", "its status was not read", payment_id))
            continue
        histories[payment_id] = _History(received, final, expiry.window, expiry.read_by)
        violations.extend(_check_payment(payment_id, histories[payment_id]))
    for call in deposits:
        problem = _unanswered_or_refused(call, conflict_possible=False)
        if problem is not None:
            violations.append(
                Violation(problem[0], problem[1], account_id=call.request.target, calls=(call,))
            )
    violations.extend(
        _check_ledger(opening_balance, histories, deposits, balances, ledger=ledger, window=expiry.window)
    )
    violations.extend(_negative_balances(deposits, balances))
    return violations


def lifecycles_seen(calls: Iterable[Call]) -> dict[str, int]:
    """For each payment id that answered, how many lifecycles its answers prove (at least).

    Each ``completed`` answer starts one of its own. A cancel answered ``cancelled`` with no charge
    ran in a lifecycle that a cancel of a NEW id started (a tombstone), which no completion shares;
    the next such answer is in another one when an answer that could not see that tombstone (a
    completion, a repeat, a refund, a decline) surely came between the two.
    """
    answered: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        if call.payment is not None:
            answered[call.request.target].append(call)
    counts = {}
    for payment_id, seen in answered.items():
        others = [call for call in seen if _outcome(call) in _NO_TOMBSTONE]
        tombstones = sorted((call for call in seen if _is_tombstone(call)), key=lambda call: call.sent_at)
        count = sum(_outcome(call) == Outcome.COMPLETED for call in seen)
        previous: Call | None = None
        for tombstone in tombstones:
            if previous is None or any(_surely_between(other, previous, tombstone) for other in others):
                count += 1
            previous = tombstone
        counts[payment_id] = count
    return counts


_NO_TOMBSTONE: Final = frozenset({Outcome.COMPLETED, Outcome.REPEATED, Outcome.REFUNDED, Outcome.DECLINED})


def _outcome(call: Call) -> str | None:
    answer = call.payment
    return None if answer is None else answer.outcome


def _is_tombstone(call: Call) -> bool:
    """Whether ``call`` is a cancel that found the id cancelled with nothing charged."""
    answer = call.payment
    return call.request.kind == CANCEL and answer is not None and answer.amount is None


def _surely_between(call: Call, before: Call, after: Call) -> bool:
    """Whether ``call`` ran after ``before`` and before ``after``: it was sent and answered between them."""
    if call.answered_at is None or before.answered_at is None:
        return False
    return before.answered_at <= call.sent_at and call.answered_at <= after.sent_at


@dataclass(frozen=True, slots=True)
class _History:
    """Everything one payment id received and answered, its final status, and the expiry window."""

    calls: Sequence[Call]
    final: PaymentAnswer
    window: float
    """A lifecycle lasts at least this long (seconds; infinite when ids do not expire in the run)."""
    read_by: float
    """The final status was read by then."""

    @property
    def final_charge(self) -> Charge | None:
        """The charge stored for the id at the end, if any."""
        return _charge_of(self.final)

    @property
    def answered(self) -> list[tuple[Call, PaymentAnswer]]:
        """The calls answered 200, with their answers."""
        return [(call, answer) for call in self.calls if (answer := call.payment) is not None]

    @property
    def cancels(self) -> list[Call]:
        """The cancelPayment calls sent for the id, answered or not."""
        return [call for call in self.calls if call.request.kind == CANCEL]

    @property
    def first_sent(self) -> float:
        """When the first call of the id was sent: no lifecycle of it started before."""
        return min(call.sent_at for call in self.calls)

    def floor(self, call: Call) -> float:
        """A time before which the lifecycle ``call`` ran in (if it ran in one) cannot have started.

        A completion starts its own, after its call was sent. A call sent after a completion or a
        decline had been answered runs in a lifecycle that started after that one ran: a later one,
        or (a completion's) the same.
        """
        floor = self.first_sent
        if _outcome(call) == Outcome.COMPLETED:
            floor = max(floor, call.sent_at)
        for earlier in self.calls:
            if (
                _outcome(earlier) in (Outcome.COMPLETED, Outcome.DECLINED)
                and earlier.answered_at is not None
                and earlier.answered_at <= call.sent_at
            ):
                floor = max(floor, earlier.sent_at)
        return floor

    def lasts(self, call: Call, until: float) -> bool:
        """Whether the lifecycle ``call`` ran in had surely not ended by ``until``."""
        return until - self.floor(call) < self.window

    def in_final_lifecycle(self, call: Call) -> bool:
        """Whether the final status is of the lifecycle ``call`` ran in."""
        return self.lasts(call, self.read_by)

    def one_lifecycle(self, first: Call, second: Call) -> bool:
        """Whether two answered calls surely ran in one lifecycle: neither ran a window after the other."""
        if first.answered_at is None or second.answered_at is None:
            return False
        return self.lasts(first, second.answered_at) and self.lasts(second, first.answered_at)

    def conflict_possible(self, call: Call) -> bool:
        """Whether a makePayment could have met the id COMPLETED with another charge: a 409 is right.

        That needs another body sent for the id; no completion with this body in the lifecycle the
        call ran in; and, when the final status is of that lifecycle, a final charge that differs.
        """
        body = call.request.charge
        if body is None or call.answered_at is None:
            return False
        if all(other.request.charge in (None, body) for other in self.calls):
            return False
        for completion, answer in self.answered:
            before = completion.answered_at is not None and completion.answered_at <= call.sent_at
            if (
                before
                and answer.outcome == Outcome.COMPLETED
                and _charge_of(answer) == body
                and self.lasts(completion, call.answered_at)
            ):
                return False
        if self.in_final_lifecycle(call):
            return self.final_charge not in (None, body)
        return True


Finding = tuple[str, str]
"""A broken rule and what shows it."""


def _check_payment(payment_id: str, history: _History) -> Iterator[Violation]:
    """The rules of one payment id, from the answers it gave and its final status."""
    calls = history.calls
    account = history.final.accountId or next(
        (c.request.account_id for c in calls if c.request.account_id), None
    )
    for rule in (_answered, _moved_once, _caused, _completion_kept, _cancel_kept, _cancel_won):
        for name, message in rule(history):
            yield Violation(name, message, payment_id, account, calls=tuple(calls))


def _answered(history: _History) -> Iterator[Finding]:
    """Every call got an answer, and no error but a 409 for a body the id could be completed with."""
    for call in history.calls:
        problem = _unanswered_or_refused(call, conflict_possible=history.conflict_possible(call))
        if problem is not None:
            yield problem


def _moved_once(history: _History) -> Iterator[Finding]:
    """At most one call withdrew, and at most one refunded, in one lifecycle."""
    for outcome in (Outcome.COMPLETED, Outcome.REFUNDED):
        moved = sorted((call for call in history.calls if _outcome(call) == outcome), key=_sent)
        twice = [
            (first, second)
            for index, first in enumerate(moved)
            for second in moved[index + 1 :]
            if history.one_lifecycle(first, second)
        ]
        if twice:
            first, second = twice[0]
            message = (
                f"{len(moved)} calls answered {outcome.value!r}, and those sent at"
                f" +{first.sent_at:.3f}s and +{second.sent_at:.3f}s ran within one lifecycle"
            )
            yield "moved-twice", message


def _sent(call: Call) -> float:
    return call.sent_at


def _caused(history: _History) -> Iterator[Finding]:
    """The final state comes from calls that were sent: a charge from a body, a tombstone from a cancel."""
    bodies = {charge for call in history.calls if (charge := call.request.charge) is not None}
    charge = history.final_charge
    if charge is not None and charge not in bodies:
        yield "unknown-charge", f"its final charge {_show(charge)} was never sent for it"
    if history.final.state is State.CANCELLED and not history.cancels:
        yield "phantom-cancel", "it is CANCELLED but no cancelPayment was sent for it"


def _completion_kept(history: _History) -> Iterator[Finding]:
    """A completion a client saw in the final lifecycle lasts, with its charge, or a cancel refunds it."""
    seen = {
        _charge_of(answer)
        for call, answer in history.answered
        if answer.state is State.COMPLETED and history.in_final_lifecycle(call)
    }
    if not seen:
        return
    final, charge = history.final, history.final_charge
    if not history.cancels and final.state is not State.COMPLETED:
        yield "lost-completion", f"a client saw it COMPLETED, it was never cancelled, now {final.state}"
    elif charge is None:
        yield "kept-money", f"a client saw it COMPLETED, now {final.state} with no charge to refund"
    if charge is not None:
        for other in seen - {charge}:
            yield "answer-mismatch", f"a client saw it COMPLETED with {_show(other)}, now {_show(charge)}"


def _cancel_kept(history: _History) -> Iterator[Finding]:
    """In the final lifecycle, a cancel a client saw lasts, and a refund it saw keeps the refunded charge."""
    final = history.final
    in_final = [answer for call, answer in history.answered if history.in_final_lifecycle(call)]
    if any(answer.state is State.CANCELLED for answer in in_final) and final.state is not State.CANCELLED:
        yield "lost-cancel", f"a client saw it CANCELLED, now {final.state}"
    if any(answer.outcome == Outcome.REFUNDED for answer in in_final) and history.final_charge is None:
        yield "answer-mismatch", "a cancel answered 'refunded' but no charge is stored"


def _cancel_won(history: _History) -> Iterator[Finding]:
    """A makePayment sent after a cancel was answered, in that cancel's lifecycle, is answered 200 CANCELLED.

    It moves no money, and it is no 409 either: the cancelled id answers every body alike.
    """
    acknowledged = [c for c in history.cancels if c.status == 200 and c.answered_at is not None]
    for call in history.calls:
        if call.request.kind != PAY or call.answered_at is None:
            continue
        answer = call.payment
        if answer is not None and answer.state is State.CANCELLED and not answer.moneyMoved:
            continue
        after = [
            cancel
            for cancel in acknowledged
            if cancel.answered_at is not None
            and call.sent_at > cancel.answered_at
            and history.lasts(cancel, call.answered_at)
        ]
        if after:
            got = f"{answer.state} {answer.outcome}" if answer is not None else f"{call.status} {call.error}"
            message = (
                f"makePayment sent at +{call.sent_at:.3f}s, after a cancel was answered at"
                f" +{after[0].answered_at:.3f}s in the same lifecycle, answered {got}"
            )
            yield "cancel-lost-race", message


def _check_ledger(
    opening_balance: int,
    histories: Mapping[str, _History],
    deposits: Sequence[Call],
    balances: Mapping[str, int],
    *,
    ledger: LedgerState,
    window: float,
) -> Iterator[Violation]:
    """The ledger's transfers against each other and against every call and answer of the run."""
    calls = {payment_id: tuple(history.calls) for payment_id, history in histories.items()}
    yield from _check_balances(opening_balance, balances, ledger, calls)
    yield from _check_debits(ledger, calls, window)
    yield from _check_refunds(ledger, calls)
    yield from _check_deposits(ledger, deposits)
    for payment_id, history in sorted(histories.items()):
        for message in _ledger_mismatches(history, ledger.of_payment(payment_id)):
            yield Violation(
                "ledger-mismatch",
                message,
                payment_id,
                history.final.accountId,
                calls=calls[payment_id],
                transfers=ledger.of_payment(payment_id),
            )


def _check_balances(
    opening_balance: int,
    balances: Mapping[str, int],
    ledger: LedgerState,
    calls: Mapping[str, Sequence[Call]],
) -> Iterator[Violation]:
    """Each balance, however it is read, is opening + deposits - payments + refunds of the ledger's transfers.

    The read through the ingress is what clients see, the cached balance what the ledger's writes
    check, and the sum of the account's entries what an auditor would add up.
    """
    for account_id in sorted(set(balances) | set(ledger.balances)):
        if account_id not in balances:
            yield Violation("no-final-balance", "its balance was not read", account_id=account_id)
        moves = [t for t in ledger.transfers if t.account_id == account_id and t.posted]
        deposited, paid, refunded = (
            sum(t.amount for t in moves if t.kind == kind)
            for kind in (DEPOSIT_KIND, PAYMENT_KIND, REFUND_KIND)
        )
        expected = opening_balance + deposited - paid + refunded
        readings = {
            "read through the ingress": balances.get(account_id),
            "cached in the ledger": ledger.balances.get(account_id),
            "the sum of its entries": ledger.entry_sums.get(account_id),
        }
        wrong = {name: value for name, value in readings.items() if value is not None and value != expected}
        if not wrong:
            continue
        differences = {value - expected for value in wrong.values()}
        suspects = sorted(
            {t.payment_id for t in moves if t.payment_id and abs(t.amount) in map(abs, differences)}
        )
        yield Violation(
            "balance",
            f"opening {opening_balance} + deposits {deposited} - payments {paid} + refunds {refunded}"
            f" = {expected} in the ledger's transfers, but the balance "
            + ", ".join(f"{name} is {value} ({value - expected:+d})" for name, value in wrong.items()),
            account_id=account_id,
            suspects=tuple(suspects),
            calls=tuple(call for payment_id in suspects for call in calls.get(payment_id, ())),
            transfers=tuple(t for t in moves if t.payment_id in suspects),
        )


def _check_debits(
    ledger: LedgerState, calls: Mapping[str, Sequence[Call]], window: float
) -> Iterator[Violation]:
    """Each debit has a makePayment of its id and body behind it, and no two fall within one window.

    A debit happens only in NEW and starts a lifecycle (its expiry timer is armed after the debit
    committed); the next debit of the id needs that lifecycle to have ended, a window later, whether
    or not the first was refunded meanwhile. Both times are the database's clock, the timer runs on
    the same host's wall clock.
    """
    for payment_id in sorted(ledger.payment_ids):
        debits = ledger.debits(payment_id)  # oldest first
        received = calls.get(payment_id, ())
        bodies = {charge for call in received if (charge := call.request.charge) is not None}
        for debit in debits:
            if debit.charge not in bodies:
                yield Violation(
                    "unknown-charge",
                    f"the ledger holds the debit {debit.describe()}, which no makePayment of it asked for",
                    payment_id,
                    debit.account_id,
                    calls=tuple(received),
                    transfers=(debit,),
                )
        twice = [
            (first, second) for first, second in itertools.pairwise(debits) if second.at - first.at < window
        ]
        if twice:
            first, second = twice[0]
            refunds = ledger.refund_of(first.transfer_id)
            state = (
                "the first had been refunded by then"
                if refunds is not None and refunds.at <= second.at
                else "both unrefunded at once"
            )
            yield Violation(
                "charged-twice",
                f"{len(debits)} debits in the ledger, and {first.transfer_id} and {second.transfer_id}"
                f" were {second.at - first.at:.3f} s apart, within one lifecycle ({state})",
                payment_id,
                first.account_id,
                suspects=(payment_id,),
                calls=tuple(received),
                transfers=ledger.of_payment(payment_id),
            )


def _check_refunds(ledger: LedgerState, calls: Mapping[str, Sequence[Call]]) -> Iterator[Violation]:
    """Each refund gives back a posted debit of its own payment id, which somebody cancelled."""
    for refund in ledger.transfers:
        if refund.kind != REFUND_KIND:
            continue
        debit = ledger.transfer(refund.refund_of)
        received = calls.get(refund.payment_id or "", ())
        problem = None
        if debit is None or debit.kind != PAYMENT_KIND or not debit.posted:
            problem = f"names {refund.refund_of}, which is no posted debit"
        elif (debit.payment_id, debit.charge) != (refund.payment_id, refund.charge):
            problem = f"gives back {debit.describe()}, a debit of another payment or amount"
        elif not any(call.request.kind == CANCEL for call in received):
            problem = "is for an id nobody cancelled"
        if problem is not None:
            yield Violation(
                "unknown-refund",
                f"the refund {refund.describe()} {problem}",
                refund.payment_id,
                refund.account_id,
                calls=tuple(received),
                transfers=(refund, *(() if debit is None else (debit,))),
            )


def _check_deposits(ledger: LedgerState, deposits: Sequence[Call]) -> Iterator[Violation]:
    """Every acknowledged deposit is in the ledger once, and no deposit is there that no call explains.

    A deposit's first answer is the balance right after it, which the ledger's entry of it records:
    an acknowledged key is the ledger's deposit of its account, amount and that balance. A repeat's
    answer (the service restarted between the ledger's commit and Restate's record of it) gives the
    balance at the time of the repeat, so it only says that the ledger holds a deposit of the key's
    account and amount. A key never answered may or may not have deposited.
    """
    recorded = Counter(
        (t.account_id, t.amount, t.balance_after) for t in ledger.transfers if t.kind == DEPOSIT_KIND
    )
    unanswered: Counter[tuple[str, int]] = Counter()

    def only_repeats(sent: list[Call]) -> bool:
        return not any(isinstance(c.answer, DepositAnswer) and not c.answer.repeated for c in sent)

    # Keys whose answers name a balance claim their deposit first; a repeat takes any left of its amount.
    for sent in sorted(_by_key(deposits).values(), key=only_repeats):
        request = sent[0].request
        account, amount = request.target, request.amount or 0
        answers = [call.answer for call in sent if isinstance(call.answer, DepositAnswer)]
        seen = sorted({answer.balance for answer in answers if not answer.repeated})
        found = [key for key in recorded if key[:2] == (account, amount) and recorded[key]]
        if seen and recorded[account, amount, seen[0]]:
            recorded[account, amount, seen[0]] -= 1
        elif answers and not seen and found:
            recorded[found[0]] -= 1
        elif answers:
            yield Violation(
                "lost-deposit",
                f"{request.describe()} was answered"
                f" {f'with the balance {seen[0]}' if seen else 'as a repeat'}, and the ledger holds no"
                " deposit of it",
                account_id=account,
                calls=tuple(sent),
            )
        elif any(call.status is None for call in sent):
            unanswered[account, amount] += 1
    extra: Counter[tuple[str, int]] = Counter()
    for (account, amount, _), count in recorded.items():
        extra[account, amount] += count
    for (account, amount), count in sorted((extra - unanswered).items()):
        yield Violation(
            "unknown-deposit",
            f"the ledger holds {count} deposit(s) of {amount} that no call explains (a key deposited"
            " twice, or a deposit nobody sent)",
            account_id=account,
            calls=tuple(c for c in deposits if (c.request.target, c.request.amount) == (account, amount)),
            transfers=tuple(
                t
                for t in ledger.transfers
                if t.kind == DEPOSIT_KIND and (t.account_id, t.amount) == (account, amount)
            ),
        )


def _ledger_mismatches(history: _History, transfers: Sequence[Transfer]) -> Iterator[str]:
    """Where the answers and the final state of an id say something its ledger transfers contradict.

    A COMPLETED id's lifecycle began with its newest debit, which nothing refunded; a CANCELLED one
    holding a charge refunded a debit of it; a plain tombstone began when no debit was left to
    refund, and none came after it.
    """
    debits = sorted((t for t in transfers if t.kind == PAYMENT_KIND and t.posted), key=_at)
    refunded = {t.refund_of: t for t in transfers if t.kind == REFUND_KIND}
    debited: Counter[Charge | None] = Counter(debit.charge for debit in debits)
    gave_back: Counter[Charge | None] = Counter(t.charge for t in refunded.values())
    # Each answer that moved money is its own invocation, so its own transfer.
    for outcome, moved, what in (
        (Outcome.COMPLETED, debited, "debit"),
        (Outcome.REFUNDED, gave_back, "refund"),
    ):
        seen = Counter(_charge_of(answer) for _, answer in history.answered if answer.outcome == outcome)
        for charge, count in sorted(seen.items(), key=str):
            if count > moved[charge]:
                yield (
                    f"{count} call(s) answered {outcome.value!r} with {_show(charge)}, and the ledger"
                    f" holds {moved[charge]} such {what}(s)"
                )
    final, charge = history.final, history.final_charge
    unrefunded = [debit for debit in debits if debit.transfer_id not in refunded]
    if final.state is State.COMPLETED and not (
        debits and debits[-1].charge == charge and debits[-1] in unrefunded
    ):
        yield f"it is COMPLETED with {_show(charge)}, and its newest debit is not that charge, unrefunded"
    elif final.state is State.CANCELLED and charge is not None and charge not in gave_back:
        yield f"it is CANCELLED with {_show(charge)} refunded, and the ledger holds no such refund"
    elif final.state is State.CANCELLED and charge is None and unrefunded:
        yield "it is CANCELLED with nothing charged, and the ledger holds a debit of it nobody refunded"


def _at(transfer: Transfer) -> float:
    return transfer.at


def _negative_balances(deposits: Sequence[Call], balances: Mapping[str, int]) -> Iterator[Violation]:
    """No balance is ever below zero: neither the final ones nor any a deposit answered."""
    for account_id, balance in sorted(balances.items()):
        if balance < 0:
            yield Violation("negative-balance", f"its final balance is {balance}", account_id=account_id)
    for call in deposits:
        if isinstance(call.answer, BalanceAnswer) and call.answer.balance < 0:
            yield Violation(
                "negative-balance",
                f"a deposit answered the balance {call.answer.balance}",
                account_id=call.request.target,
                calls=(call,),
            )


def _by_key(deposits: Sequence[Call]) -> dict[str, list[Call]]:
    """Deposits grouped by idempotency key: copies of one deposit deposit once."""
    grouped: dict[str, list[Call]] = defaultdict(list)
    for call in deposits:
        grouped[call.request.idempotency_key or f"unkeyed-{id(call)}"].append(call)
    return grouped


def _unanswered_or_refused(call: Call, *, conflict_possible: bool) -> Finding | None:
    """The rule and message when a call got no answer or an error it should not have got.

    The one error a valid call may get is a 409, for a makePayment that met its id completed with
    another body (``conflict_possible``).
    """
    if call.status is None:
        return "unanswered", f"{call.request.describe()} got no answer: {call.error}"
    if call.status != 200 and not (call.status == CONFLICT_STATUS and conflict_possible):
        return "refused", f"{call.request.describe()} got {call.status} {call.error}"
    return None


def _charge_of(answer: PaymentAnswer) -> Charge | None:
    """The charge an answer is about, if any."""
    if answer.accountId is None or answer.amount is None:
        return None
    return Charge(answer.accountId, answer.amount)


def _show(charge: Charge | None) -> str:
    """A charge as ``(account, amount)``."""
    return "no charge" if charge is None else f"({charge.account_id}, {charge.amount})"
