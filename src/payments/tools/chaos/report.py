"""The report of a chaos run: its figures as a table and as JSON, every violation with its calls.

Besides the counts, it shows what a run felt like to its clients: the slowest calls, and the longest
stall, during which calls were waiting and none was answered.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from payments.config import Part
from payments.runtime.reconcile import Reconciliation
from payments.service.answers import PaymentAnswer
from payments.tools.chaos.invariants import Call, Transfer, Violation, lifecycles_seen
from payments.tools.chaos.options import PARTS, ChaosOptions

_SENT, _ANSWERED = 0, 1


@dataclass
class Report:
    """What a run did and found; ``violations`` empty means every invariant held."""

    seed: int
    options: ChaosOptions
    calls: list[Call]
    kills: dict[str, int]
    storm_seconds: float
    settle_seconds: float | None
    """From the end of the storm until Restate had nothing left to run; None if it never got there."""
    violations: list[Violation]
    data_dir: Path
    retries: int = 0
    kills_by_node: dict[int, int] = field(default_factory=dict)
    """restate-server's kills per node; empty for a single node."""
    most_nodes_down: int = 0
    """The most restate-server nodes that were down at once, counting each from its kill until it
    answered again."""
    reconciliation: Reconciliation | None = None
    """What ``payments reconcile`` found after the run; None when it could not run (a violation then)."""
    lifecycles: dict[int, int] = field(init=False)
    """How many payment ids the answers prove went through each number of lifecycles (at least)."""
    expiries_seen: int = field(init=False)
    """Lifecycles that the answers prove ended: each one after the first of an id."""
    calls_by_kind: dict[str, int] = field(init=False)
    answers_by_status: dict[str, int] = field(init=False)
    outcomes: dict[str, int] = field(init=False)
    slowest_calls: list[Call] = field(init=False)
    """The calls that took longest from their first attempt to their answer, retries included."""
    longest_stall_seconds: float = field(init=False)
    """The longest time during which calls were waiting and none was answered."""

    def __post_init__(self) -> None:
        per_id = lifecycles_seen(self.calls).values()
        self.lifecycles = dict(sorted(Counter(per_id).items()))
        self.expiries_seen = sum(max(0, count - 1) for count in per_id)
        self.slowest_calls = slowest_calls(self.calls)
        self.longest_stall_seconds = longest_stall(self.calls)
        self.calls_by_kind = dict(Counter(call.request.kind for call in self.calls))
        self.answers_by_status = dict(
            Counter("none" if call.status is None else str(call.status) for call in self.calls)
        )
        self.outcomes = dict(
            Counter(
                call.answer.outcome if isinstance(call.answer, PaymentAnswer) else "deposited"
                for call in self.calls
                if call.answer is not None
            )
        )

    @property
    def ok(self) -> bool:
        """Whether every invariant held."""
        return not self.violations

    def table(self) -> str:
        """The figures of the run as an aligned two-column table."""

        def counts(values: Mapping[str, int]) -> str:
            return "  ".join(f"{name} {count}" for name, count in sorted(values.items())) or "-"

        options = self.options
        storm = (
            f"{self.storm_seconds:.1f} s, {options.ids} payment ids, {options.accounts} accounts,"
            f" {options.concurrency} clients"
        )
        if options.expiry is not None:
            storm += f", ids expire after {options.expiry:g} s"
        kills = {part: str(self.kills.get(part, 0)) for part in PARTS}
        if options.nodes > 1:
            storm += f", {options.nodes} restate-server nodes"
            by_node = ", ".join(f"node {node} {count}" for node, count in sorted(self.kills_by_node.items()))
            kills[Part.RESTATE_SERVER] += f" ({by_node})"
        settle = "did not settle" if self.settle_seconds is None else f"{self.settle_seconds:.1f} s"
        longest_call = "-"
        if self.slowest_calls:
            slowest = self.slowest_calls[0]
            longest_call = (
                f"{_duration(slowest):.1f} s ({slowest.request.kind} {slowest.request.target},"
                f" {slowest.attempts} attempt{'s' if slowest.attempts > 1 else ''})"
            )
        rows = [
            ("seed", str(self.seed)),
            ("storm", storm),
            ("calls sent", f"{counts(self.calls_by_kind)}  (total {len(self.calls)})"),
            ("answers by status", counts(self.answers_by_status)),
            ("outcomes", counts(self.outcomes)),
            (
                "lifecycles per id",
                "  ".join(f"{count}: {ids}" for count, ids in self.lifecycles.items())
                + f"  (ids by lifecycles seen; {self.expiries_seen} expiries seen)",
            ),
            ("retries", str(self.retries)),
            ("kills", "  ".join(f"{part} {count}" for part, count in sorted(kills.items()))),
            *([("nodes down at once", f"at most {self.most_nodes_down}")] if options.nodes > 1 else []),
            ("longest stall", f"{self.longest_stall_seconds:.1f} s (calls waiting, none answered)"),
            ("longest call", longest_call),
            ("time to settle", settle),
            (
                "reconcile",
                "could not run"
                if self.reconciliation is None
                else self.reconciliation.describe().splitlines()[-1],
            ),
            ("violations", str(len(self.violations))),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data: figures, options, and every violation with its calls."""
        options = {
            name: str(value) if isinstance(value, Path) else value
            for name, value in asdict(self.options).items()
        }
        return {
            "ok": self.ok,
            "seed": self.seed,
            "options": options,
            "stormSeconds": round(self.storm_seconds, 3),
            "settleSeconds": None if self.settle_seconds is None else round(self.settle_seconds, 3),
            "calls": len(self.calls),
            "callsByKind": self.calls_by_kind,
            "answersByStatus": self.answers_by_status,
            "outcomes": self.outcomes,
            "lifecyclesPerId": {str(count): ids for count, ids in self.lifecycles.items()},
            "expiriesSeen": self.expiries_seen,
            "retries": self.retries,
            "kills": self.kills,
            "killsByNode": {str(node): count for node, count in sorted(self.kills_by_node.items())},
            "mostNodesDown": self.most_nodes_down,
            "longestStallSeconds": round(self.longest_stall_seconds, 3),
            "longestCallSeconds": round(_duration(self.slowest_calls[0]), 3) if self.slowest_calls else None,
            "slowestCalls": [_call_json(call) for call in self.slowest_calls],
            "reconcile": None if self.reconciliation is None else self.reconciliation.to_json(),
            "dataDir": str(self.data_dir),
            "violations": [_violation_json(violation) for violation in self.violations],
        }

    def write(self, path: Path) -> None:
        """Write the JSON report to ``path``, creating its directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def slowest_calls(calls: Sequence[Call], count: int = 5) -> list[Call]:
    """The ``count`` answered calls that took longest from their first attempt to their answer."""
    answered = [call for call in calls if call.answered_at is not None]
    return sorted(answered, key=_duration, reverse=True)[:count]


def _duration(call: Call) -> float:
    assert call.answered_at is not None
    return call.answered_at - call.sent_at


def longest_stall(calls: Sequence[Call]) -> float:
    """The longest time during which at least one call was waiting and no call was answered.

    A pause in which nobody was calling is not a stall. Each stall is measured up to the answer that
    ends it, so calls left unanswered at the end (the check reports them) add none after the last answer.
    """
    # A send sorts before an answer at the same moment.
    events = sorted(
        [(call.sent_at, _SENT) for call in calls]
        + [(call.answered_at, _ANSWERED) for call in calls if call.answered_at is not None]
    )
    waiting = 0
    since = 0.0
    longest = 0.0
    for at, event in events:
        if event == _ANSWERED:
            longest = max(longest, at - since)
            waiting -= 1
            since = at
        else:
            if waiting == 0:
                since = at
            waiting += 1
    return longest


def _violation_json(violation: Violation) -> dict[str, Any]:
    return {
        "rule": violation.rule,
        "message": violation.message,
        "paymentId": violation.payment_id,
        "accountId": violation.account_id,
        "suspects": list(violation.suspects),
        "calls": [_call_json(call) for call in violation.calls],
        "transfers": [_transfer_json(transfer) for transfer in violation.transfers],
    }


def _transfer_json(transfer: Transfer) -> dict[str, Any]:
    return {
        "transferId": transfer.transfer_id,
        "kind": transfer.kind,
        "accountId": transfer.account_id,
        "amount": transfer.amount,
        "at": round(transfer.at, 3),
        "posted": transfer.posted,
        "paymentId": transfer.payment_id,
        "refundOf": transfer.refund_of,
        "balanceAfter": transfer.balance_after,
    }


def _call_json(call: Call) -> dict[str, Any]:
    request = call.request
    return {
        "kind": request.kind,
        "target": request.target,
        "accountId": request.account_id,
        "amount": request.amount,
        "idempotencyKey": request.idempotency_key,
        "sentAt": round(call.sent_at, 3),
        "answeredAt": None if call.answered_at is None else round(call.answered_at, 3),
        "attempts": call.attempts,
        "lostAttempts": call.lost_attempts,
        "status": call.status,
        "answer": None if call.answer is None else call.answer.model_dump(mode="json"),
        "error": call.error,
    }
