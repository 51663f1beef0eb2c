"""``payments chaos``: a storm of duplicated, conflicting and cancelled payments while processes die.

A run starts its own stack (fresh data directory, free ports; one restate-server or a cluster of
nodes; optionally a short expiry window, so that ids go through several lifecycles), plans a random
script for every payment id and a set of deposits from one seed, plays the
scripts through many concurrent clients spread over the nodes' ingresses while two loops SIGKILL
the service and restate-server (one node at a time, unless told otherwise) at random moments,
waits until Restate has nothing left to run, reads every payment's status and every balance, and
hands all of it to :func:`payments.invariants.check`. The supervisor restarts what was killed, as
it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from payments.client import NotRunningError, PaymentsClient, ServiceError, rotated, until_answered
from payments.config import MAX_EXPIRY_SECONDS, MAX_NODES, SERVER, Settings
from payments.runtime import health
from payments.runtime.admin import Admin, AdminError
from payments.service.answers import BalanceAnswer, PaymentAnswer
from payments.tools.chaos.invariants import (
    CANCEL,
    DEPOSIT,
    PAY,
    Call,
    Expiry,
    Request,
    Violation,
    check,
    lifecycles_seen,
)
from payments.tools.launcher import LaunchedStack, Part

RETRY_DEADLINE_SECONDS: Final = 300.0
"""How long a client keeps retrying one call, far less than the expiry window, as the README asks."""
SCRIPT_SPREAD: Final = 0.85
"""Scripts start in the first 85 % of the storm, so that most of them play out before it ends."""
STEP_GAP_SECONDS: Final = (0.05, 1.5)
BURST_SIZES: Final = (1, 1, 2, 2, 3, 4, 6, 8)
CONFLICT_CHANCE: Final = 0.1
PATTERNS: Final = {
    "pay": 40,
    "cancel-before": 15,
    "cancel-during": 15,
    "cancel-after": 25,
    "cancel-only": 5,
    "drain": 5,
    "declined-retry": 6,
}
"""How often each kind of script is drawn, in relative weights."""
LIFECYCLES_WEIGHT: Final = 30
"""The weight of scripts that play several of the others on one id, about a window apart; only drawn
when the run sets a short expiry window."""
LIFECYCLE_ROUNDS: Final = (2, 4)
ROUND_GAP_WINDOWS: Final = (0.5, 1.5)
"""The gap between two rounds, in expiry windows: some land in the same lifecycle, some after it."""
PAYMENT_AMOUNTS: Final = (1, 2000)
DRAIN_SHARE: Final = (1 / 3, 1.0)
"""A draining payment takes this share of an opening balance: accounts run dry and decline."""
RETRY_SHARE: Final = (0.1, 0.5)
"""A payment retried after a deposit of its amount, which may have been declined the first time."""
SHARES: Final = {"drain": DRAIN_SHARE, "declined-retry": RETRY_SHARE}
OPENING_BALANCE: Final = Settings().opening_balance
DEPOSIT_AMOUNTS: Final = (100, 5000)
DEPOSITS_PER_ID: Final = 0.25
DUPLICATE_DEPOSIT_CHANCE: Final = 0.25
UNSETTLED_SQL: Final = (
    "SELECT target_service_name AS service, target_handler_name AS handler, status, count(*) AS n"
    " FROM sys_invocation WHERE status <> 'completed'"
    " GROUP BY target_service_name, target_handler_name, status"
)
HTTP_SERVER_ERROR: Final = 500
PARTS: Final[tuple[Part, ...]] = ("service", "restate-server")
_SENT, _ANSWERED = 0, 1


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """What a chaos run does; the defaults are those of ``payments chaos``."""

    duration: float = 60.0
    ids: int = 600
    accounts: int = 10
    concurrency: int = 64
    seed: int | None = None
    nodes: int = 1
    """restate-server nodes of the stack: 1, or a cluster."""
    max_nodes_down: int = 1
    """How many of the nodes may be down at once; more than a minority stalls every call."""
    kill_service: bool = True
    kill_server: bool = True
    kill_min: float = 1.0
    """Seconds a (re)started process runs at least before it is killed; the most is ``kill_max``."""
    kill_max: float = 12.0
    settle_timeout: float = 300.0
    expiry: float | None = None
    """The stack's expiry window (``PAYMENTS_EXPIRY_SECONDS``) in seconds; None keeps the day it has
    by default, which no run outlasts. A few seconds make ids go through several lifecycles."""
    data_dir: Path | None = None
    """Where the stack keeps its data; None for a fresh temporary directory, removed after a clean run."""

    def check(self) -> None:
        """Refuse options a run cannot go with, naming the option."""
        if self.duration <= 0:
            raise ValueError("--duration must be positive")
        for name in ("ids", "accounts", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if self.expiry is not None and not 0 < self.expiry <= MAX_EXPIRY_SECONDS:
            raise ValueError(f"--expiry must be more than 0 and at most {MAX_EXPIRY_SECONDS:.0f}")
        if not 0 < self.kill_min <= self.kill_max:
            raise ValueError("--kill-min must be positive and at most --kill-max")
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"--nodes must be 1 to {MAX_NODES}")
        if not 1 <= self.max_nodes_down <= self.nodes:
            raise ValueError("--max-nodes-down must be at least 1 and at most --nodes")
        if self.data_dir is not None and self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ValueError(f"--data-dir {self.data_dir} is not empty; a chaos run needs a fresh one")

    @property
    def parts_to_kill(self) -> tuple[Part, ...]:
        """The processes the run kills."""
        wanted = {"service": self.kill_service, "restate-server": self.kill_server}
        return tuple(part for part in PARTS if wanted[part])


# -- the plan: every choice of a run, drawn from its seed -------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """Requests sent together, not before ``at`` seconds into the storm."""

    at: float
    requests: tuple[Request, ...]


Script = tuple[Step, ...]
"""Steps played one after the other: each waits until the one before is answered."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The scripts of a run, and the payment ids and accounts they use."""

    scripts: tuple[Script, ...]
    payment_ids: tuple[str, ...]
    accounts: tuple[str, ...]


def plan(options: ChaosOptions, seed: int, opening_balance: int = OPENING_BALANCE) -> Plan:
    """Draw a script for every payment id, and the deposits, from ``seed``."""
    rng = random.Random(seed)  # noqa: S311 - repeatable choices, not secrets
    accounts = tuple(f"a{index:03d}" for index in range(options.accounts))
    payment_ids = tuple(f"p{index:05d}" for index in range(options.ids))
    draw = _Draw(rng, accounts, options, opening_balance)
    scripts = [draw.script(payment_id) for payment_id in payment_ids]
    for index in range(max(options.accounts, round(options.ids * DEPOSITS_PER_ID))):
        deposit = Request(
            DEPOSIT,
            rng.choice(accounts),
            amount=rng.randint(*DEPOSIT_AMOUNTS),
            idempotency_key=f"d{index:05d}",
        )
        # An impatient client may send the same deposit twice at once; its key makes it count once.
        copies = 2 if rng.random() < DUPLICATE_DEPOSIT_CHANCE else 1
        scripts.append((Step(rng.uniform(0, options.duration), (deposit,) * copies),))
    return Plan(tuple(scripts), payment_ids, accounts)


@dataclass(frozen=True, slots=True)
class _Draw:
    """Draws the script of each payment id."""

    rng: random.Random
    accounts: Sequence[str]
    options: ChaosOptions
    opening_balance: int

    def script(self, payment_id: str) -> Script:
        """The steps of one payment id.

        Bursts of makePayment, duplicated and sometimes conflicting, with a cancel before, during or
        after; a payment that drains its account, or one retried after a deposit of its amount; with a
        short expiry window, several of those on one id, about a window apart.
        """
        rng, expiry = self.rng, self.options.expiry
        weights = {**PATTERNS, "lifecycles": LIFECYCLES_WEIGHT if expiry is not None else 0}
        pattern = rng.choices(list(weights), weights=list(weights.values()))[0]
        share = SHARES.get(pattern)
        if share is None:
            amount = rng.randint(*PAYMENT_AMOUNTS)
        else:
            low, high = (round(self.opening_balance * part) for part in share)
            amount = max(1, rng.randint(low, high))
        charge = Request(PAY, payment_id, rng.choice(self.accounts), amount)
        if pattern == "lifecycles":
            basic = [name for name in PATTERNS if name not in ("drain", "declined-retry")]
            rounds = [self._groups(rng.choice(basic), charge) for _ in range(rng.randint(*LIFECYCLE_ROUNDS))]
        else:
            rounds = [self._groups(pattern, charge)]
        at = rng.uniform(0, self.options.duration * SCRIPT_SPREAD)
        steps = []
        for index, groups in enumerate(rounds):
            if index and expiry is not None:
                at += rng.uniform(*ROUND_GAP_WINDOWS) * expiry
            for group in groups:
                steps.append(Step(at, tuple(group)))
                at += rng.uniform(*STEP_GAP_SECONDS)
        return tuple(steps)

    def _groups(self, pattern: str, charge: Request) -> list[list[Request]]:
        """The requests of one pattern, in groups sent one after the other."""
        rng = self.rng
        amount, account = charge.amount or 0, charge.account_id or ""
        conflicting = Request(PAY, charge.target, rng.choice(self.accounts), amount + rng.randint(1, 99))
        cancel = Request(CANCEL, charge.target)

        def burst() -> list[Request]:
            size = rng.choice(BURST_SIZES)
            return [conflicting if rng.random() < CONFLICT_CHANCE else charge for _ in range(size)]

        def maybe(requests: list[Request]) -> list[list[Request]]:
            return [requests] if rng.random() < 0.5 else []

        if pattern in ("pay", "drain"):
            return [burst(), *maybe(burst())]
        if pattern == "declined-retry":
            top_up = Request(DEPOSIT, account, amount=amount, idempotency_key=f"t{charge.target}")
            return [burst(), [top_up], [charge]]
        if pattern == "cancel-before":
            return [[cancel], burst()]
        if pattern == "cancel-during":
            during = burst()
            during.insert(rng.randrange(len(during) + 1), cancel)
            return [during]
        if pattern == "cancel-after":
            return [burst(), [cancel], *maybe(burst()), *maybe([cancel])]
        return [[cancel], *maybe([cancel, cancel])]


# -- the report ------------------------------------------------------------------------------------


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
            kills[SERVER] += f" ({by_node})"
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


# -- progress ----------------------------------------------------------------------------------------


class Progress:
    """One line of progress: redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, *, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = float("-inf")
        self._drawn = False

    def show(self, line: str, *, force: bool = False) -> None:
        """Show ``line``; off a terminal, only if ``every`` seconds passed since the last one or forced."""
        now = time.monotonic()
        if self.tty:
            # A line wider than the terminal wraps, and a carriage return then redraws only its end.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write(f"\r\x1b[K{line[:width]}")
            self._drawn = True
        elif force or now - self._last >= self.every:
            self.stream.write(f"{line}\n")
            self._last = now
        self.stream.flush()

    def say(self, line: str) -> None:
        """Print a line that stays, below any line being redrawn."""
        self.finish()
        self.stream.write(f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the in-place line, so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _bar(done: float, width: int = 24) -> str:
    filled = round(max(0.0, min(1.0, done)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


# -- the run -----------------------------------------------------------------------------------------


def run(
    options: ChaosOptions,
    *,
    stack_env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Start a stack, storm it while killing its processes, let it settle, and check the invariants.

    ``stack_env`` reaches ``payments up``, as :class:`~payments.launcher.LaunchedStack` describes.
    """
    options.check()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 32)
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="payments-chaos-"))
    if progress is not None:
        progress.say(f"chaos: seed {seed}; starting a stack in {data_dir}")
    env = dict(stack_env or {})
    if options.expiry is not None:
        env["PAYMENTS_EXPIRY_SECONDS"] = str(options.expiry)
    with LaunchedStack(data_dir, env=env, nodes=options.nodes) as stack:
        report = asyncio.run(_Run(stack, options, seed, progress).play())
    if options.data_dir is None and report.ok:
        shutil.rmtree(data_dir, ignore_errors=True)
    return report


class _Run:
    """One run against a started stack: the storm, the kills, the settling and the check."""

    def __init__(
        self, stack: LaunchedStack, options: ChaosOptions, seed: int, progress: Progress | None
    ) -> None:
        self.stack = stack
        self.options = options
        self.seed = seed
        self.progress = progress
        self.plan = plan(options, seed, stack.settings.opening_balance)
        self.calls: list[Call] = []
        self.in_flight = 0
        self.retries = 0
        self.kills: Counter[tuple[Part, int]] = Counter()
        """SIGKILLs by part and node (1 for the service)."""
        self.most_nodes_down = 0
        self.phase = "storm"
        self.unsettled: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._idle: asyncio.Queue[PaymentsClient] = asyncio.Queue()

    def elapsed(self) -> float:
        """Seconds since the storm began."""
        return time.monotonic() - self._started

    async def play(self) -> Report:
        """The whole run, from the first call to the report."""
        admin = Admin(self.stack.settings.admin_url)
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(admin.aclose)
            await cleanup.enter_async_context(self._clients())
            ticker = asyncio.create_task(self._tick())
            cleanup.callback(self._stop_ticking, ticker)
            storm_seconds = await self._storm()
            self.phase = "settling"
            await asyncio.to_thread(self.stack.wait_ready)
            settled = await self._settle(admin)
            settle_seconds = self.elapsed() - storm_seconds if settled else None
            self.phase = "reading the final state"
            statuses, balances = await self._final_state()
            expiry = Expiry(self.stack.settings.expiry_seconds, read_by=self.elapsed())
            self.phase = "done"
        violations = check(self.stack.settings.opening_balance, self.calls, statuses, balances, expiry)
        if not settled:
            still = "; ".join(
                f"{row['service']}/{row['handler']} {row['status']} x{row['n']}" for row in self.unsettled
            )
            message = f"Restate still had work after {self.options.settle_timeout:.0f} s: {still}"
            violations.insert(0, Violation("not-settled", message))
        return Report(
            seed=self.seed,
            options=self.options,
            calls=self.calls,
            kills={part: self._kills_of(part) for part in PARTS},
            storm_seconds=storm_seconds,
            settle_seconds=settle_seconds,
            violations=violations,
            data_dir=self.stack.settings.data_dir,
            retries=self.retries,
            kills_by_node={node: self.kills[SERVER, node] for node in range(1, self.options.nodes + 1)}
            if self.options.nodes > 1
            else {},
            most_nodes_down=self.most_nodes_down,
        )

    def _kills_of(self, part: Part) -> int:
        return sum(count for (killed, _), count in self.kills.items() if killed == part)

    async def _storm(self) -> float:
        """Play every script and kill processes until the duration is over; wait for the last answers."""
        self._started = time.monotonic()
        stop_killing = asyncio.Event()
        killers = [
            asyncio.create_task(self._kill_loop(part, stop_killing)) for part in self.options.parts_to_kill
        ]
        scripts = [asyncio.create_task(self._play(script)) for script in self.plan.scripts]
        await asyncio.sleep(self.options.duration)
        storm_seconds = self.elapsed()
        stop_killing.set()
        self.phase = "draining"
        await asyncio.gather(*killers, *scripts)
        return storm_seconds

    async def _play(self, script: Script) -> None:
        """Send each step of ``script`` at its time, once the step before it was answered."""
        for step in script:
            if step.at >= self.options.duration:
                return
            await asyncio.sleep(step.at - self.elapsed())
            if self.elapsed() >= self.options.duration:
                return
            await asyncio.gather(*(self._send(request) for request in step.requests))

    async def _send(self, request: Request) -> None:
        """Send one request with a free client, retrying as a real client would, and record it."""
        async with self._client() as client:
            sent_at = self.elapsed()
            attempts = 1
            lost = 0

            def retried(error: BaseException) -> None:
                nonlocal attempts, lost
                attempts += 1
                lost += _may_have_run(error)
                self.retries += 1

            status: int | None = None
            answer: PaymentAnswer | BalanceAnswer | None = None
            error: str | None = None
            self.in_flight += 1
            try:
                answer = await until_answered(
                    lambda: _send_once(client, request),
                    deadline_seconds=RETRY_DEADLINE_SECONDS,
                    on_retry=retried,
                )
                status = 200
            except ServiceError as refused:
                status, error = refused.status, refused.message
            except (NotRunningError, httpx.TransportError) as failed:
                error = f"{type(failed).__name__}: {failed}"
            finally:
                self.in_flight -= 1
            answered_at = None if status is None else self.elapsed()
            self.calls.append(Call(request, sent_at, answered_at, attempts, status, answer, error, lost))

    async def _kill_loop(self, part: Part, stop: asyncio.Event) -> None:
        """SIGKILL ``part`` a random time after each (re)start, until ``stop`` is set.

        Each kill picks a random node among those it may kill (restate-server's nodes; the service is
        one), so that no more than ``max_nodes_down`` are ever down at once.
        """
        waits = random.Random(f"{self.seed}:{part}")  # noqa: S311 - repeatable choices, not secrets
        picks = random.Random(f"{self.seed}:{part}:node")  # noqa: S311
        limit = self.options.max_nodes_down if part == SERVER else 1
        down: dict[int, int] = {}
        """Killed nodes that do not answer yet, with the pid each was killed with."""
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not stop.is_set():
                if not await self._killable(http, part, down, limit):
                    await _wait(stop, 0.05)
                    continue
                if await _wait(stop, waits.uniform(self.options.kill_min, self.options.kill_max)):
                    return
                killable = await self._killable(http, part, down, limit)  # things moved meanwhile
                if not killable:
                    continue
                node = picks.choice(killable)
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                    down[node] = self.stack.kill(part, node)
                    self.kills[part, node] += 1
                    if part == SERVER:
                        self.most_nodes_down = max(self.most_nodes_down, len(down))

    async def _killable(
        self, http: httpx.AsyncClient, part: Part, down: dict[int, int], limit: int
    ) -> list[int]:
        """The nodes of ``part`` a kill may hit now without more than ``limit`` of them down.

        Forgets the nodes in ``down`` that answer again. One that was restarted and does not answer
        yet may be killed again, during its recovery: that leaves as many nodes down as before.
        """
        for node, killed in list(down.items()):
            if self._pid(part, node) not in (None, killed) and await self._answers(http, part, node):
                del down[node]
        restarting = [node for node, killed in down.items() if self._pid(part, node) not in (None, killed)]
        if len(down) >= limit:
            return restarting
        nodes = range(1, self.options.nodes + 1) if part == SERVER else range(1, 2)
        return [*restarting, *(node for node in nodes if node not in down)]

    def _pid(self, part: Part, node: int) -> int | None:
        """The pid in the pid file of ``node`` of ``part``, or None while there is none."""
        try:
            return self.stack.pid(part, node)
        except (FileNotFoundError, ValueError):
            return None

    async def _answers(self, http: httpx.AsyncClient, part: Part, node: int) -> bool:
        """Whether ``node`` of ``part`` answers its health checks (and, a node, knows the deployment)."""
        settings = self.stack.settings
        urls = (
            health.node_ready_urls(settings.restate_nodes[node - 1])
            if part == SERVER
            else [settings.service_health_url]
        )
        return await health.answers(http, urls)

    async def _settle(self, admin: Admin) -> bool:
        """Wait until no invocation is left but the expiry timers; False after the settle timeout."""
        deadline = time.monotonic() + self.options.settle_timeout
        while time.monotonic() < deadline:
            try:
                rows = await admin.query(UNSETTLED_SQL)
            except (AdminError, httpx.TransportError):
                await asyncio.sleep(0.5)
                continue
            self.unsettled = [row for row in rows if not _is_expiry_timer(row)]
            if not self.unsettled:
                return True
            await asyncio.sleep(0.25)
        return False

    async def _final_state(self) -> tuple[dict[str, PaymentAnswer], dict[str, int]]:
        """The status of every payment id and the balance of every account, as clients read them."""

        async def status(payment_id: str) -> PaymentAnswer:
            async with self._client() as client:
                return await until_answered(lambda: client.get_status(payment_id))

        async def balance(account: str) -> int:
            async with self._client() as client:
                return (await until_answered(lambda: client.balance(account))).balance

        ids, accounts = self.plan.payment_ids, self.plan.accounts
        statuses = await asyncio.gather(*(status(payment_id) for payment_id in ids))
        balances = await asyncio.gather(*(balance(account) for account in accounts))
        return dict(zip(ids, statuses, strict=True)), dict(zip(accounts, balances, strict=True))

    @contextlib.asynccontextmanager
    async def _clients(self) -> AsyncIterator[None]:
        """Open one client per concurrent caller; each sends one call at a time."""
        urls = self.stack.settings.ingress_urls
        async with contextlib.AsyncExitStack() as opened:
            for index in range(self.options.concurrency):
                # Each client starts at another node's ingress, so that every node takes calls.
                client = PaymentsClient(rotated(urls, index))
                self._idle.put_nowait(await opened.enter_async_context(client))
            yield

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[PaymentsClient]:
        """A client nobody is using, which limits the calls in flight to the number of clients."""
        client = await self._idle.get()
        try:
            yield client
        finally:
            self._idle.put_nowait(client)

    async def _tick(self) -> None:
        """Redraw the progress line until cancelled."""
        if self.progress is None:
            return
        while True:
            self.progress.show(self._status_line())
            await asyncio.sleep(0.2)

    def _stop_ticking(self, ticker: asyncio.Task[None]) -> None:
        ticker.cancel()
        if self.progress is not None:
            self.progress.show(self._status_line(), force=True)
            self.progress.finish()

    def _status_line(self) -> str:
        duration = self.options.duration
        elapsed = min(self.elapsed(), duration)
        kills = ", ".join(f"{part} {self._kills_of(part)}" for part in self.options.parts_to_kill) or "off"
        head = self.phase
        if self.phase == "storm":
            head = f"{_bar(elapsed / duration)} {elapsed:4.0f}/{duration:.0f} s"
        return (
            f"{head} | calls {len(self.calls) + self.in_flight} (in flight {self.in_flight})"
            f" | retries {self.retries} | kills {kills}"
        )


async def _send_once(client: PaymentsClient, request: Request) -> PaymentAnswer | BalanceAnswer:
    """One attempt at ``request``."""
    if request.kind == CANCEL:
        return await client.cancel_payment(request.target)
    if request.amount is None:
        raise ValueError(f"{request.kind} needs an amount")
    if request.kind == DEPOSIT:
        return await client.deposit(request.target, request.amount, idempotency_key=request.idempotency_key)
    if request.account_id is None:
        raise ValueError("makePayment needs an account")
    return await client.make_payment(request.target, request.account_id, request.amount)


def _may_have_run(error: BaseException) -> bool:
    """Whether a failed attempt may have run in Restate: it was sent, and nothing said it was refused.

    A 404 (a node that does not know the service yet) and a connection that never opened are
    refusals; a connection broken mid-call or a 5xx may come after the call ran.
    """
    if isinstance(error, ServiceError):
        return error.status >= HTTP_SERVER_ERROR
    return isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.ConnectError | httpx.ConnectTimeout
    )


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``event`` is set; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _is_expiry_timer(row: Mapping[str, Any]) -> bool:
    """Whether a row of :data:`UNSETTLED_SQL` is only the armed expiry timers, which wait for a day."""
    return bool(row["status"] == "scheduled" and row["handler"] == "expireToken")
