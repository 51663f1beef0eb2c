"""What must hold after a chaos run, checked over the calls it recorded and the final state it read.

Pure logic: no I/O, no clock, no Restate. :mod:`payments.chaos` records every call and what it
finally got back, lets the system settle, reads each payment's status and each account's balance
through the public API, and hands all of it to :func:`check`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from payments.answers import BalanceAnswer, PaymentAnswer
from payments.state_machine import Charge, Outcome, State

CallKind = Literal["makePayment", "cancelPayment", "deposit"]
PAY: Final = "makePayment"
CANCEL: Final = "cancelPayment"
DEPOSIT: Final = "deposit"
CONFLICT_STATUS: Final = 409


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
    answer; ``answer`` is set for a 200 only.
    """

    request: Request
    sent_at: float
    answered_at: float | None
    attempts: int
    status: int | None
    answer: PaymentAnswer | BalanceAnswer | None = None
    error: str | None = None

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

    def describe(self) -> str:
        """The violation and every call behind it, one per line."""
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
        return "\n".join(lines)


def check(
    opening_balance: int,
    calls: Iterable[Call],
    statuses: Mapping[str, PaymentAnswer],
    balances: Mapping[str, int],
) -> list[Violation]:
    """Every violation of the contract that the calls and the final state show.

    ``statuses`` holds the final getStatus of every payment id that received a call, and
    ``balances`` the final balance of every account.
    """
    by_payment: dict[str, list[Call]] = defaultdict(list)
    deposits: list[Call] = []
    for call in calls:
        if call.request.kind == DEPOSIT:
            deposits.append(call)
        else:
            by_payment[call.request.target].append(call)
    violations: list[Violation] = []
    for payment_id, received in sorted(by_payment.items()):
        final = statuses.get(payment_id)
        if final is None:
            violations.append(Violation("no-final-status", "its status was not read", payment_id))
            continue
        violations.extend(_check_payment(payment_id, received, final))
    for call in deposits:
        problem = _unanswered_or_refused(call, None)
        if problem is not None:
            violations.append(
                Violation(problem[0], problem[1], account_id=call.request.target, calls=(call,))
            )
    violations.extend(_check_balances(opening_balance, by_payment, deposits, statuses, balances))
    return violations


@dataclass(frozen=True, slots=True)
class _History:
    """Everything one payment id received and answered, and its final status."""

    calls: Sequence[Call]
    final: PaymentAnswer

    @property
    def final_charge(self) -> Charge | None:
        """The charge stored for the id at the end, if any."""
        return _charge_of(self.final)

    @property
    def answers(self) -> list[PaymentAnswer]:
        """The 200 answers the id gave."""
        return [answer for call in self.calls if (answer := call.payment) is not None]

    @property
    def cancels(self) -> list[Call]:
        """The cancelPayment calls sent for the id, answered or not."""
        return [call for call in self.calls if call.request.kind == CANCEL]


Finding = tuple[str, str]
"""A broken rule and what shows it."""


def _check_payment(payment_id: str, calls: Sequence[Call], final: PaymentAnswer) -> Iterator[Violation]:
    """The rules of one payment id, from the answers it gave and its final status."""
    history = _History(calls, final)
    account = final.accountId or next((c.request.account_id for c in calls if c.request.account_id), None)
    for rule in (_answered, _moved_once, _caused, _completion_kept, _cancel_kept, _cancel_won):
        for name, message in rule(history):
            yield Violation(name, message, payment_id, account, calls=tuple(calls))


def _answered(history: _History) -> Iterator[Finding]:
    """Every call got an answer, and no error but a 409 for a body the id did not complete with."""
    for call in history.calls:
        problem = _unanswered_or_refused(call, history.final_charge)
        if problem is not None:
            yield problem


def _moved_once(history: _History) -> Iterator[Finding]:
    """At most one call withdrew, and at most one refunded."""
    for outcome in (Outcome.COMPLETED, Outcome.REFUNDED):
        count = sum(answer.outcome == outcome for answer in history.answers)
        if count > 1:
            yield "moved-twice", f"{count} calls answered {outcome.value!r}"


def _caused(history: _History) -> Iterator[Finding]:
    """The final state comes from calls that were sent: a charge from a body, a tombstone from a cancel."""
    bodies = {charge for call in history.calls if (charge := call.request.charge) is not None}
    charge = history.final_charge
    if charge is not None and charge not in bodies:
        yield "unknown-charge", f"its final charge {_show(charge)} was never sent for it"
    if history.final.state is State.CANCELLED and not history.cancels:
        yield "phantom-cancel", "it is CANCELLED but no cancelPayment was sent for it"


def _completion_kept(history: _History) -> Iterator[Finding]:
    """A payment a client saw COMPLETED stays COMPLETED with that charge, or is refunded by a cancel."""
    seen = {_charge_of(answer) for answer in history.answers if answer.state is State.COMPLETED}
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
    """A payment a client saw CANCELLED stays CANCELLED; one it saw refunded keeps the refunded charge."""
    final = history.final
    if any(a.state is State.CANCELLED for a in history.answers) and final.state is not State.CANCELLED:
        yield "lost-cancel", f"a client saw it CANCELLED, now {final.state}"
    if any(a.outcome == Outcome.REFUNDED for a in history.answers) and history.final_charge is None:
        yield "answer-mismatch", "a cancel answered 'refunded' but no charge is stored"


def _cancel_won(history: _History) -> Iterator[Finding]:
    """A makePayment sent after a cancel was answered is answered CANCELLED and moves no money."""
    acknowledged = [c.answered_at for c in history.cancels if c.status == 200 and c.answered_at is not None]
    if not acknowledged:
        return
    cancelled_at = min(acknowledged)
    for call in history.calls:
        answer = call.payment
        late = call.request.kind == PAY and call.sent_at > cancelled_at
        if late and answer is not None and (answer.state is not State.CANCELLED or answer.moneyMoved):
            message = (
                f"makePayment sent at +{call.sent_at:.3f}s, after a cancel was answered at"
                f" +{cancelled_at:.3f}s, answered {answer.state} {answer.outcome}"
            )
            yield "cancel-lost-race", message


@dataclass
class _Money:
    """What moved through one account, as the calls and the final states tell it."""

    acknowledged: int = 0
    """Deposits answered 200, once per idempotency key."""
    uncertain: int = 0
    """Deposits never answered, which may or may not have happened."""
    completed: dict[str, int] = field(default_factory=dict)
    """Amount withdrawn by each payment id that ended COMPLETED."""
    refunded: dict[str, int] = field(default_factory=dict)
    """Amount withdrawn and given back by each payment id that ended CANCELLED after completing."""


def _check_balances(
    opening_balance: int,
    by_payment: Mapping[str, Sequence[Call]],
    deposits: Sequence[Call],
    statuses: Mapping[str, PaymentAnswer],
    balances: Mapping[str, int],
) -> Iterator[Violation]:
    """Opening + deposits + refunds - withdrawals == balance, from each payment's final state.

    A COMPLETED payment withdrew its amount; a CANCELLED one that was charged withdrew it and got it
    back; NEW and a plain tombstone moved nothing. A deposit counts once per idempotency key when a
    200 acknowledged it; one never answered may or may not have happened.
    """
    money: dict[str, _Money] = defaultdict(_Money)
    for sent in _by_key(deposits).values():
        account, amount = money[sent[0].request.target], sent[0].request.amount or 0
        if any(call.status == 200 for call in sent):
            account.acknowledged += amount
        elif any(call.status is None for call in sent):
            account.uncertain += amount
    for payment_id, final in statuses.items():
        charge = _charge_of(final)
        if charge is not None:
            moved = money[charge.account_id]
            kept = moved.completed if final.state is State.COMPLETED else moved.refunded
            kept[payment_id] = charge.amount
    for account_id in sorted(set(balances) | set(money)):
        account = money[account_id]
        balance = balances.get(account_id)
        if balance is None:
            yield Violation("no-final-balance", "its balance was not read", account_id=account_id)
            continue
        charged = sum(account.completed.values())
        expected = opening_balance + account.acknowledged - charged
        difference = balance - expected
        if 0 <= difference <= account.uncertain:
            continue
        meaning = (
            "more money than payments and deposits explain (a refund or deposit applied twice,"
            " or a withdrawal lost)"
            if difference > 0
            else "less money than payments and deposits explain (a deposit lost, or a payment charged twice)"
        )
        explained_by, suspects = _suspects(account_id, abs(difference), account, by_payment)
        same_amount = [
            call
            for call in deposits
            if call.request.target == account_id and call.request.amount == abs(difference)
        ]
        yield Violation(
            "balance",
            f"balance {balance} != opening {opening_balance} + acknowledged deposits"
            f" {account.acknowledged} - {len(account.completed)} completed payments {charged}"
            f" = {expected}, off by {difference:+d}: {meaning}{explained_by}",
            account_id=account_id,
            suspects=tuple(suspects),
            calls=(*(call for payment_id in suspects for call in by_payment[payment_id]), *same_amount),
        )


def _suspects(
    account_id: str, difference: int, account: _Money, by_payment: Mapping[str, Sequence[Call]]
) -> tuple[str, list[str]]:
    """The payment ids whose amounts add up to ``difference``, and a phrase saying how, if any do.

    The difference a bug leaves is often every refund, every charge, or one payment's amount.
    """
    for label, amounts in (
        ("every refund", account.refunded),
        ("every completed payment", account.completed),
    ):
        if amounts and sum(amounts.values()) == difference:
            return f"; exactly the amount of {label} on it", sorted(amounts)
    single = [
        payment_id
        for payment_id, calls in sorted(by_payment.items())
        if any(call.request.charge == Charge(account_id, difference) for call in calls)
    ]
    return ("; exactly the amount of one payment", single) if single else ("", [])


def _by_key(deposits: Sequence[Call]) -> dict[str, list[Call]]:
    """Deposits grouped by idempotency key: copies of one deposit deposit once."""
    grouped: dict[str, list[Call]] = defaultdict(list)
    for call in deposits:
        grouped[call.request.idempotency_key or f"unkeyed-{id(call)}"].append(call)
    return grouped


def _unanswered_or_refused(call: Call, final_charge: Charge | None) -> Finding | None:
    """The rule and message when a call got no answer or an error it should not have got.

    The one error a valid call may get is a 409, for a makePayment whose body differs from the
    charge its id completed with.
    """
    if call.status is None:
        return "unanswered", f"{call.request.describe()} got no answer: {call.error}"
    conflict = (
        call.status == CONFLICT_STATUS
        and final_charge is not None
        and call.request.charge not in (None, final_charge)
    )
    if call.status != 200 and not conflict:
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
