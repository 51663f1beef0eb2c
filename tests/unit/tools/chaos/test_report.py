"""The chaos run's report, without a stack: figures that add up, a table and JSON that read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payments.domain.state_machine import State
from payments.runtime.reconcile import Reconciliation
from payments.service.answers import PaymentAnswer
from payments.tools.chaos.invariants import CANCEL, PAY, Call, Request, Transfer, Violation
from payments.tools.chaos.options import ChaosOptions
from payments.tools.chaos.report import Report, longest_stall, slowest_calls

OPTIONS = ChaosOptions(duration=30, ids=400, accounts=5)


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
        kills={"service": 2, "restate-server": 1, "postgres": 3},
        storm_seconds=30.0,
        settle_seconds=1.5,
        violations=[
            Violation(
                "unanswered",
                "no answer",
                "p1",
                "a",
                calls=tuple(calls),
                transfers=(
                    Transfer("payment:inv_1", "payment", "a", 5, 0.3, payment_id="p1", balance_after=95),
                ),
            )
        ],
        data_dir=tmp_path,
        retries=10,
        reconciliation=Reconciliation((), accounts=4, transfers=12, payment_ids=2, in_flight=0),
    )
    assert report.calls_by_kind == {PAY: 1, CANCEL: 1}
    assert report.answers_by_status == {"200": 1, "none": 1}
    assert report.outcomes == {"completed": 1}
    assert (report.lifecycles, report.expiries_seen) == ({1: 1}, 0)
    table = report.table()
    assert "postgres 3  restate-server 1  service 2" in table
    assert "clean: 4 accounts, 12 transfers" in table
    assert "lifecycles per id  1: 1  (ids by lifecycles seen; 0 expiries seen)" in table
    assert "1.5 s" in table
    report.write(tmp_path / "out" / "chaos.json")
    written = json.loads((tmp_path / "out" / "chaos.json").read_text())
    assert written["ok"] is False
    assert written["violations"][0]["calls"][0]["answer"]["outcome"] == "completed"
    assert written["violations"][0]["transfers"][0]["transferId"] == "payment:inv_1"
    assert written["reconcile"]["ok"] is True


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
