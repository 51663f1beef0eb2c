"""What must hold after a chaos run, checked over the calls it recorded and the final state it read.

Pure logic: no I/O, no clock, no Restate. :mod:`payments.tools.chaos.run` records every call and what
it finally got back, lets the system settle, reads each payment's status and each account's balance
through the public API, and hands all of it to :func:`find_violations`.

Ids expire: the first call that gives an id state (a completion, or a cancel of a NEW id) starts a
lifecycle and arms a timer that ends it, clearing the state, no sooner than the expiry window later;
an id is charged at most once per lifecycle, and a cancel acts on the lifecycle it lands in. A client
cannot see when a timer fires, so the rules only ever compare two calls, or a call and the final
state, that the times prove to be in one lifecycle: each call ran somewhere between its first send
and its answer, and a lifecycle lasts at least the window from its start, which the answers bound
from below (see :meth:`_History.floor`).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from payments.domain.state_machine import Charge, Outcome, State
from payments.service.answers import BalanceAnswer, PaymentAnswer

CallKind = Literal["makePayment", "cancelPayment", "deposit"]
PAY: Final = "makePayment"
CANCEL: Final = "cancelPayment"
DEPOSIT: Final = "deposit"
CONFLICT_STATUS: Final = 409
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
    def unseen_runs(self) -> int:
        """How many times the call may have run without its answer reaching the client."""
        return self.lost_attempts + (self.status is None)

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
    expiry: Expiry = NEVER,
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
    violations.extend(_check_balances(opening_balance, histories, deposits, statuses, balances))
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

    @property
    def single_lifecycle(self) -> bool:
        """Whether all the id went through, up to the final read, fits in its first lifecycle."""
        return self.read_by - self.first_sent < self.window

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

    def charge_bounds(self) -> dict[str, tuple[int, int]]:
        """Per account, the least and the most the id can have charged and not refunded, in all lifecycles.

        Every completion a client saw withdrew, every refund it saw gave back; a call may also have
        run unseen once per lost attempt (an unseen makePayment may have withdrawn its body, an
        unseen cancel refunded). An attempt whose answer was lost ran, if at all, before its call
        was answered (Restate runs the calls of one key in the order it took them, and the next
        attempt is sent only after the last one failed). At most one withdrawal per lifecycle, and
        lifecycles that can hold one start at least a window apart from the first call on, until the
        last makePayment may have run. The final status, when COMPLETED, is one charge not refunded.
        """
        pays = [call for call in self.calls if call.request.kind == PAY]
        seen = [(call, answer) for call, answer in self.answered]
        withdrawn = [_charge_of(a) for _, a in seen if a.outcome == Outcome.COMPLETED]
        refunded = [_charge_of(a) for _, a in seen if a.outcome == Outcome.REFUNDED]
        unseen_pays = [
            charge for call in pays if (charge := call.request.charge) for _ in range(call.unseen_runs)
        ]
        unseen_cancels = sum(call.unseen_runs for call in self.cancels)
        bodies = [charge for call in pays if (charge := call.request.charge) is not None]
        lifecycles = 0
        if pays and math.isinf(self.window):
            lifecycles = 1
        elif pays:
            latest = max(self.read_by if call.answered_at is None else call.answered_at for call in pays)
            lifecycles = 1 + math.floor((latest - self.first_sent) / self.window)
        more = max(0, lifecycles - len(withdrawn))
        final = self.final_charge if self.final.state is State.COMPLETED else None
        accounts = {c.account_id for c in (*withdrawn, *refunded, *unseen_pays, final) if c is not None}
        bounds = {}
        for account in sorted(accounts):
            took = _amounts(withdrawn, account)
            gave = _amounts(refunded, account)
            most = sum(took) + sum(heapq.nlargest(more, _amounts(unseen_pays, account))) - sum(gave)
            unseen_refunds = sum(heapq.nlargest(unseen_cancels, _amounts(bodies, account)))
            kept = final.amount if final is not None and final.account_id == account else 0
            bounds[account] = (max(kept, sum(took) - sum(gave) - unseen_refunds, 0), most)
        return bounds


def _amounts(charges: Iterable[Charge | None], account: str) -> list[int]:
    return [charge.amount for charge in charges if charge is not None and charge.account_id == account]


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


@dataclass
class _Money:
    """What moved through one account, as the calls and the final states tell it."""

    acknowledged: int = 0
    """Deposits answered 200, once per idempotency key."""
    uncertain: int = 0
    """Deposits never answered, which may or may not have happened."""
    completed: dict[str, int] = field(default_factory=dict)
    """Amount withdrawn by each payment id that had one lifecycle and ended COMPLETED."""
    refunded: dict[str, int] = field(default_factory=dict)
    """Amount withdrawn and given back by each payment id that had one lifecycle and ended refunded."""
    bounded: dict[str, tuple[int, int]] = field(default_factory=dict)
    """The least and the most each payment id with several possible lifecycles charged net."""

    @property
    def least_charged(self) -> int:
        return sum(self.completed.values()) + sum(least for least, _ in self.bounded.values())

    @property
    def most_charged(self) -> int:
        return sum(self.completed.values()) + sum(most for _, most in self.bounded.values())


def _check_balances(
    opening_balance: int,
    histories: Mapping[str, _History],
    deposits: Sequence[Call],
    statuses: Mapping[str, PaymentAnswer],
    balances: Mapping[str, int],
) -> Iterator[Violation]:
    """Opening + deposits + refunds - withdrawals == balance, from each payment's final state and answers.

    An id that had one lifecycle moved exactly what its final state says: a COMPLETED payment
    withdrew its amount; a CANCELLED one that was charged withdrew it and got it back; NEW and a
    plain tombstone moved nothing. An id whose lifecycles may have expired left charges no final
    state shows: its answers bound them (:meth:`_History.charge_bounds`), exactly when none was lost.
    A deposit counts once per idempotency key when a 200 acknowledged it; one never answered may or
    may not have happened.
    """
    money: dict[str, _Money] = defaultdict(_Money)
    for sent in _by_key(deposits).values():
        account, amount = money[sent[0].request.target], sent[0].request.amount or 0
        if any(call.status == 200 for call in sent):
            account.acknowledged += amount
        elif any(call.status is None for call in sent):
            account.uncertain += amount
    for payment_id, final in statuses.items():
        history = histories.get(payment_id)
        if history is not None and not history.single_lifecycle:
            for account_id, bounds in history.charge_bounds().items():
                money[account_id].bounded[payment_id] = bounds
            continue
        charge = _charge_of(final)
        if charge is not None:
            moved = money[charge.account_id]
            kept = moved.completed if final.state is State.COMPLETED else moved.refunded
            kept[payment_id] = charge.amount
    by_payment = {payment_id: history.calls for payment_id, history in histories.items()}
    for account_id in sorted(set(balances) | set(money)):
        account = money[account_id]
        balance = balances.get(account_id)
        if balance is None:
            yield Violation("no-final-balance", "its balance was not read", account_id=account_id)
            continue
        most = opening_balance + account.acknowledged - account.least_charged
        least = opening_balance + account.acknowledged - account.most_charged
        if least <= balance <= most + account.uncertain:
            continue
        difference = balance - (most if balance > most else least)
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
        charged = f"{len(account.completed)} completed payments {sum(account.completed.values())}"
        if account.bounded:
            charged = (
                f"net charges from {account.least_charged} to {account.most_charged}"
                f" ({len(account.bounded)} ids with several lifecycles)"
            )
            expected = f"{least}..{most}"
        else:
            expected = str(most)
        yield Violation(
            "balance",
            f"balance {balance} != opening {opening_balance} + acknowledged deposits"
            f" {account.acknowledged} - {charged} = {expected}, off by {difference:+d}:"
            f" {meaning}{explained_by}",
            account_id=account_id,
            suspects=tuple(suspects),
            calls=(*(call for payment_id in suspects for call in by_payment[payment_id]), *same_amount),
        )


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
