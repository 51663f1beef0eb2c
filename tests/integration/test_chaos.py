"""``payments chaos`` against real stacks: a storm with kills breaks nothing, and a planted bug is caught."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from payments import chaos
from payments.restate_server import PROJECT_ROOT

SHORT_STORM = chaos.ChaosOptions(
    duration=40,
    ids=360,
    accounts=8,
    concurrency=48,
    seed=20_240_601,
    kill_min=0.5,
    kill_max=3.0,
    settle_timeout=120,  # well within pytest's timeout, so that a run that never settles says so
)


def test_a_storm_with_kills_of_both_processes_keeps_every_invariant(tmp_path: Path) -> None:
    report = chaos.run(dataclasses.replace(SHORT_STORM, data_dir=tmp_path / "stack"))

    assert report.violations == [], "\n".join(violation.describe() for violation in report.violations)
    assert report.settle_seconds is not None
    assert report.kills["service"] >= 5
    assert report.kills["restate-server"] >= 5
    assert len(report.calls) >= 1000


def test_the_checker_catches_a_service_that_refunds_twice(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable, "-m", "payments.cli", "chaos",
            "--duration", "10", "--ids", "80", "--accounts", "4", "--seed", "7",
            "--no-kill-service", "--no-kill-server",
            "--data-dir", str(tmp_path / "stack"), "--report", str(report_path),
        ],
        env={
            **os.environ,
            "PAYMENTS_SERVICE_MODULE": "tests.integration.broken_service",
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
    balance_violations = [v for v in report["violations"] if v["rule"] == "balance"]
    assert balance_violations, report["violations"]
    # Every account got back each of its refunds once more, and the report says so.
    assert all("exactly the amount of every refund" in v["message"] for v in balance_violations)
    assert all(v["suspects"] and v["calls"] for v in balance_violations)
    assert "VIOLATION balance" in result.stdout
