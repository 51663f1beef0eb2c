"""The plan of a chaos run: a script for every payment id, and the deposits, all drawn from one seed.

A script is a few steps played one after the other; a step is requests sent together. The same seed
and options draw the same plan, so a run that found a violation can be played again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from payments.config import Settings
from payments.tools.chaos.invariants import CANCEL, DEPOSIT, PAY, Request
from payments.tools.chaos.options import ChaosOptions

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


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """Requests sent together, not before ``at`` seconds into the storm."""

    at: float
    requests: tuple[Request, ...]


Script = tuple[ScriptStep, ...]
"""Steps played one after the other: each waits until the one before is answered."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The scripts of a run, and the payment ids and accounts they use."""

    scripts: tuple[Script, ...]
    payment_ids: tuple[str, ...]
    accounts: tuple[str, ...]


def draw_plan(options: ChaosOptions, seed: int, opening_balance: int = OPENING_BALANCE) -> Plan:
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
        scripts.append((ScriptStep(rng.uniform(0, options.duration), (deposit,) * copies),))
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
                steps.append(ScriptStep(at, tuple(group)))
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
