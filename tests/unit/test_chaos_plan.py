"""The chaos run's plan and report, without a stack: repeatable choices, and a report that reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payments.answers import PaymentAnswer
from payments.chaos import ChaosOptions, Plan, Report, plan
from payments.invariants import CANCEL, DEPOSIT, PAY, Call, Request, Violation
from payments.state_machine import State

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
    assert plan(OPTIONS, 1) == plan(OPTIONS, 1)
    assert plan(OPTIONS, 1) != plan(OPTIONS, 2)


def test_every_id_gets_a_script_and_cancels_come_before_during_and_after() -> None:
    drawn = plan(OPTIONS, 3)
    scripts = payment_scripts(drawn)
    assert sorted(payment_id for payment_id, _ in scripts) == list(drawn.payment_ids)
    shapes = [steps for _, steps in scripts]
    assert any(steps[:2] == [{CANCEL}, {PAY}] for steps in shapes)
    assert any(steps[0] == {PAY, CANCEL} for steps in shapes)
    assert any(steps[:2] == [{PAY}, {CANCEL}] for steps in shapes)
    assert any(all(CANCEL not in step for step in steps) for steps in shapes)


def test_bursts_are_duplicated_and_sometimes_conflicting() -> None:
    drawn = plan(OPTIONS, 4)
    bursts = [step.requests for script in drawn.scripts for step in script if kinds(step.requests) == {PAY}]
    assert any(len(burst) > 1 for burst in bursts)
    assert any(len({request.charge for request in burst}) > 1 for burst in bursts)


def test_deposits_have_one_key_each_and_steps_start_within_the_storm() -> None:
    drawn = plan(OPTIONS, 5)
    steps = [step for script in drawn.scripts for step in script]
    deposits = [step.requests for step in steps if kinds(step.requests) == {DEPOSIT}]
    assert len({burst[0].idempotency_key for burst in deposits}) == len(deposits)
    assert all(len({request.idempotency_key for request in burst}) == 1 for burst in deposits)
    assert all(step.at >= 0 for step in steps)
    assert all(script[0].at < OPTIONS.duration for script in drawn.scripts)


@pytest.mark.parametrize(
    "options",
    [
        ChaosOptions(duration=0),
        ChaosOptions(ids=0),
        ChaosOptions(kill_min=3, kill_max=2),
    ],
)
def test_options_a_run_cannot_go_with_are_refused(options: ChaosOptions) -> None:
    with pytest.raises(ValueError, match="--"):
        options.check()


def test_the_report_counts_calls_and_serializes_its_violations(tmp_path: Path) -> None:
    answer = PaymentAnswer(
        paymentId="p1",
        state=State.COMPLETED,
        outcome="completed",
        moneyMoved=True,
        accountId="a",
        amount=5,
        reason="payment completed",
    )
    calls = [
        Call(Request(PAY, "p1", "a", 5), 0.1, 0.4, 3, 200, answer),
        Call(Request(CANCEL, "p1"), 0.2, None, 9, None, None, "ConnectError: refused"),
    ]
    report = Report(
        seed=9,
        options=OPTIONS,
        calls=calls,
        kills={"service": 2, "restate-server": 1},
        storm_seconds=30.0,
        settle_seconds=1.5,
        violations=[Violation("unanswered", "no answer", "p1", "a", calls=tuple(calls))],
        data_dir=tmp_path,
        retries=10,
    )
    assert report.calls_by_kind == {PAY: 1, CANCEL: 1}
    assert report.answers_by_status == {"200": 1, "none": 1}
    assert report.outcomes == {"completed": 1}
    table = report.table()
    assert "restate-server 1  service 2" in table
    assert "1.5 s" in table
    report.write(tmp_path / "out" / "chaos.json")
    written = json.loads((tmp_path / "out" / "chaos.json").read_text())
    assert written["ok"] is False
    assert written["violations"][0]["calls"][0]["answer"]["outcome"] == "completed"
