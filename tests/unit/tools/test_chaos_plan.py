"""The chaos run's plan and report, without a stack: repeatable choices, and a report that reads."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import pytest

from payments.client import NotRunningError, ServiceError
from payments.domain.state_machine import State
from payments.service.answers import PaymentAnswer
from payments.tools.chaos.invariants import CANCEL, DEPOSIT, PAY, Call, Request, Violation
from payments.tools.chaos.storm import (
    OPENING_BALANCE,
    ChaosOptions,
    Plan,
    Report,
    Script,
    _may_have_run,
    longest_stall,
    plan,
    slowest_calls,
)

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


def test_some_scripts_drain_accounts_and_some_retry_after_a_deposit_of_their_amount() -> None:
    drawn = plan(OPTIONS, 6)
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
    gaps = [longest_gap(script) for script in plan(expiring, 7).scripts]
    assert sum(gap >= 0.5 * 4 for gap in gaps) >= expiring.ids // 10
    assert all(gap <= 1.5 * 4 + 1.5 for gap in gaps)
    # Without a short window no script waits for one.
    assert all(longest_gap(script) <= 1.5 for script in plan(OPTIONS, 7).scripts)


@pytest.mark.parametrize(
    ("error", "may_have_run"),
    [
        (httpx.ReadError("connection reset"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
        (ServiceError(503, "unavailable"), True),
        (httpx.ConnectError("refused"), False),
        (NotRunningError("nothing answers"), False),
        (ServiceError(404, "service not found"), False),
    ],
)
def test_an_attempt_that_failed_mid_call_may_have_run(error: BaseException, may_have_run: bool) -> None:
    assert _may_have_run(error) is may_have_run


@pytest.mark.parametrize(
    "options",
    [
        ChaosOptions(duration=0),
        ChaosOptions(ids=0),
        ChaosOptions(kill_min=3, kill_max=2),
        ChaosOptions(nodes=0),
        ChaosOptions(nodes=10),
        ChaosOptions(nodes=3, max_nodes_down=0),
        ChaosOptions(nodes=3, max_nodes_down=4),
        ChaosOptions(max_nodes_down=2),
        ChaosOptions(expiry=0),
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
    assert (report.lifecycles, report.expiries_seen) == ({1: 1}, 0)
    table = report.table()
    assert "restate-server 1  service 2" in table
    assert "lifecycles per id  1: 1  (ids by lifecycles seen; 0 expiries seen)" in table
    assert "1.5 s" in table
    report.write(tmp_path / "out" / "chaos.json")
    written = json.loads((tmp_path / "out" / "chaos.json").read_text())
    assert written["ok"] is False
    assert written["violations"][0]["calls"][0]["answer"]["outcome"] == "completed"


def call(sent_at: float, answered_at: float | None, target: str = "p") -> Call:
    status = None if answered_at is None else 200
    return Call(Request(CANCEL, target), sent_at, answered_at, 1, status, None)


@pytest.mark.parametrize(
    ("calls", "stall"),
    [
        ([], 0.0),
        ([call(1.0, 1.5)], 0.5),
        # Overlapping calls: the longest stretch without an answer is from 2.0 to 6.0.
        ([call(1.0, 2.0), call(1.5, 6.0), call(3.0, 6.5)], 4.0),
        # Nobody calling between 2.0 and 10.0 is no stall.
        ([call(1.0, 2.0), call(10.0, 11.0)], 1.0),
        # A call never answered waits too, but only the next answer ends a stall.
        ([call(1.0, 2.0), call(1.5, None), call(3.0, 3.5)], 1.5),
    ],
)
def test_the_longest_stall_is_waiting_calls_without_an_answer(calls: list[Call], stall: float) -> None:
    assert longest_stall(calls) == pytest.approx(stall)


def test_the_slowest_calls_count_from_the_first_attempt() -> None:
    assert slowest_calls([]) == []
    assert slowest_calls([call(1.0, None)]) == []
    calls = [call(1.0, 2.0, "a"), call(1.5, 4.0, "b"), call(3.0, None, "c"), call(0.0, 1.5, "d")]
    assert [slow.request.target for slow in slowest_calls(calls, 2)] == ["b", "d"]


def test_a_cluster_report_shows_kills_by_node_and_the_stalls(tmp_path: Path) -> None:
    report = Report(
        seed=1,
        options=ChaosOptions(nodes=3),
        calls=[call(0.0, 1.0), call(0.5, 4.0, "p7")],
        kills={"service": 4, "restate-server": 5},
        storm_seconds=30.0,
        settle_seconds=2.0,
        violations=[],
        data_dir=tmp_path,
        kills_by_node={1: 2, 2: 0, 3: 3},
        most_nodes_down=1,
    )
    table = report.table()
    assert "restate-server 5 (node 1 2, node 2 0, node 3 3)  service 4" in table
    assert "3 restate-server nodes" in table
    assert "at most 1" in table
    assert "longest stall       3.0 s" in table
    assert "longest call        3.5 s (cancelPayment p7, 1 attempt)" in table
    written = report.to_json()
    assert written["killsByNode"] == {"1": 2, "2": 0, "3": 3}
    assert (written["longestStallSeconds"], written["longestCallSeconds"]) == (3.0, 3.5)
    assert [slow["target"] for slow in written["slowestCalls"]] == ["p7", "p"]
