"""``payments up`` itself: what it does when it is stopped before everything has started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from payments.config import Settings
from payments.processes import free_port
from tests.helpers import wait_for


def test_sigterm_during_the_start_stops_everything_at_once(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        ingress_port=free_port(),
        admin_port=free_port(),
        node_port=free_port(),
        service_port=free_port(),
    )
    env = {**os.environ, **settings.to_env(), "PAYMENTS_SERVICE_MODULE": "tests.integration.never_serves"}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "payments.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    service_pid = settings.pid_file("service")
    # restate-server is up and the service started, which will never answer its health check.
    wait_for(service_pid.exists, "the service to be started")
    children = psutil.Process(up.pid).children(recursive=True)

    up.send_signal(signal.SIGTERM)

    # Without stopping the start, payments up would wait out the service's 60 s start timeout.
    assert up.wait(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert not settings.ready_file.exists()
    assert "stopping before everything started" in (tmp_path / "up.log").read_text()
