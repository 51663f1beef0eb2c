"""``payments chaos`` against real stacks: a storm with kills breaks nothing, and planted bugs are caught."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from payments.tools.chaos.options import ChaosOptions
from payments.tools.chaos.run import run_chaos
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow  # every test here runs a storm

SHORT_STORM = ChaosOptions(
    duration=40,
    ids=360,
    accounts=8,
    concurrency=48,
    seed=20_240_601,
    kill_min=0.5,
    kill_max=3.0,
    settle_timeout=120,  # well within pytest's timeout, so that a run that never settles says so
    expiry=4,  # ids expire and are paid again while processes die
)


def test_a_storm_with_kills_of_all_three_processes_keeps_every_invariant(tmp_path: Path) -> None:
    report = run_chaos(dataclasses.replace(SHORT_STORM, data_dir=tmp_path / "stack"))

    assert report.violations == [], "\n".join(violation.describe() for violation in report.violations)
    assert report.settle_seconds is not None
    # A loop kills its process again only once it answers, and a service restarted while PostgreSQL is
    # down waits for it before it serves: fewer kills of each fit in the storm than with two loops.
    assert all(report.kills[part] >= 3 for part in ("service", "restate-server", "postgres")), report.kills
    assert report.reconciliation is not None
    assert report.reconciliation.ok
    assert len(report.calls) >= 1000
    # Accounts ran dry and declined, and ids went through several lifecycles. The kills keep the stack
    # down for most of the storm (each restart waits up to 5 s, and each loop kills again within 3 s of
    # an answer), so most lifecycles are seen as it drains: 8 to 14 in four runs, one of them on CI.
    assert report.outcomes.get("declined", 0) >= 20
    assert report.expiries_seen >= 4


def run_broken(tmp_path: Path, bug: str, *options: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """A short storm without kills against the service with ``bug`` planted; the run and its report."""
    report_path = tmp_path / "report.json"
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable, "-m", "payments.cli", "chaos",
            "--duration", "10", "--ids", "80", "--accounts", "4", "--seed", "7",
            "--no-kill-service", "--no-kill-server", "--no-kill-database", *options,
            "--data-dir", str(tmp_path / "stack"), "--report", str(report_path),
        ],
        env={
            **os.environ,
            "PAYMENTS_SERVICE_MODULE": "tests.integration.broken_service",
            "BROKEN_SERVICE_BUG": bug,
            "PYTHONPATH": pythonpath,
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert not report["ok"]
    return result, report


def test_the_checker_catches_a_service_that_charges_twice(tmp_path: Path) -> None:
    result, report = run_broken(tmp_path, "withdraw-twice")

    # The ledger's balances add up: the second debits are in it, and no call explains them.
    charged_twice = [v for v in report["violations"] if v["rule"] == "charged-twice"]
    assert charged_twice, report["violations"]
    assert all(v["suspects"] == [v["paymentId"]] and len(v["transfers"]) >= 2 for v in charged_twice)
    assert {v["rule"] for v in report["violations"]} <= {"charged-twice", "reconcile"}
    assert "VIOLATION charged-twice" in result.stdout


def test_the_checker_catches_a_service_whose_ids_expire_before_their_window(tmp_path: Path) -> None:
    result, report = run_broken(tmp_path, "early-expiry", "--expiry", "4")

    rules = {v["rule"] for v in report["violations"]}
    # Payments retried within the window were charged again, and payments sent after an answered cancel
    # completed, both within what the checker knows is one lifecycle; the ledger shows the second debits.
    assert {"moved-twice", "charged-twice", "cancel-lost-race"} <= rules, rules
    assert "within one lifecycle" in result.stdout
