"""The chaos run's plan, without a stack: repeatable choices, and scripts of every shape."""

from __future__ import annotations

import itertools

from payments.tools.chaos.invariants import CANCEL, DEPOSIT, PAY, Request
from payments.tools.chaos.options import ChaosOptions
from payments.tools.chaos.plan import OPENING_BALANCE, Plan, Script, draw_plan

OPTIONS = ChaosOptions(duration=30, ids=400, accounts=5)


def kinds(step_requests: tuple[Request, ...]) -> set[str]:
    return {request.kind for request in step_requests}


def payment_scripts(drawn: Plan) -> list[tuple[str, list[set[str]]]]:
    return [
        (script[0].requests[0].target, [kinds(step.requests) for step in script])
        for script in drawn.scripts
        if script[0].requests[0].kind != DEPOSIT
    ]


def test_a_seed_repeats_every_choice() -> None:
    assert draw_plan(OPTIONS, 1) == draw_plan(OPTIONS, 1)
    assert draw_plan(OPTIONS, 1) != draw_plan(OPTIONS, 2)


def test_every_id_gets_a_script_and_cancels_come_before_during_and_after() -> None:
    drawn = draw_plan(OPTIONS, 3)
    scripts = payment_scripts(drawn)
    assert sorted(payment_id for payment_id, _ in scripts) == list(drawn.payment_ids)
    shapes = [steps for _, steps in scripts]
    assert any(steps[:2] == [{CANCEL}, {PAY}] for steps in shapes)
    assert any(steps[0] == {PAY, CANCEL} for steps in shapes)
    assert any(steps[:2] == [{PAY}, {CANCEL}] for steps in shapes)
    assert any(all(CANCEL not in step for step in steps) for steps in shapes)


def test_bursts_are_duplicated_and_sometimes_conflicting() -> None:
    drawn = draw_plan(OPTIONS, 4)
    bursts = [step.requests for script in drawn.scripts for step in script if kinds(step.requests) == {PAY}]
    assert any(len(burst) > 1 for burst in bursts)
    assert any(len({request.charge for request in burst}) > 1 for burst in bursts)


def test_deposits_have_one_key_each_and_steps_start_within_the_storm() -> None:
    drawn = draw_plan(OPTIONS, 5)
    steps = [step for script in drawn.scripts for step in script]
    deposits = [step.requests for step in steps if kinds(step.requests) == {DEPOSIT}]
    assert len({burst[0].idempotency_key for burst in deposits}) == len(deposits)
    assert all(len({request.idempotency_key for request in burst}) == 1 for burst in deposits)
    assert all(step.at >= 0 for step in steps)
    assert all(script[0].at < OPTIONS.duration for script in drawn.scripts)


def test_some_scripts_drain_accounts_and_some_retry_after_a_deposit_of_their_amount() -> None:
    drawn = draw_plan(OPTIONS, 6)
    first_charges = [script[0].requests[0] for script in drawn.scripts if script[0].requests[0].kind == PAY]
    draining = [request for request in first_charges if (request.amount or 0) >= OPENING_BALANCE // 3]
    assert len(draining) >= OPTIONS.ids // 50
    retried = [
        script
        for script in drawn.scripts
        if [kinds(step.requests) for step in script] == [{PAY}, {DEPOSIT}, {PAY}]
        and script[1].requests[0].amount == script[2].requests[0].amount
        and script[1].requests[0].target == script[2].requests[0].account_id
    ]
    assert len(retried) >= OPTIONS.ids // 50


def longest_gap(script: Script) -> float:
    return max((later.at - earlier.at for earlier, later in itertools.pairwise(script)), default=0.0)


def test_with_a_short_expiry_some_ids_are_played_again_about_a_window_later() -> None:
    expiring = ChaosOptions(duration=30, ids=400, accounts=5, expiry=4)
    gaps = [longest_gap(script) for script in draw_plan(expiring, 7).scripts]
    assert sum(gap >= 0.5 * 4 for gap in gaps) >= expiring.ids // 10
    assert all(gap <= 1.5 * 4 + 1.5 for gap in gaps)
    # Without a short window no script waits for one.
    assert all(longest_gap(script) <= 1.5 for script in draw_plan(OPTIONS, 7).scripts)
