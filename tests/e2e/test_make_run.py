"""`make run` as a user runs it: the two curl commands, a kill -9, Ctrl-C, a second start, a hang-up."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from payments.config import Settings
from payments.runtime.processes import port_is_free
from payments.tools.launcher import free_ports, wait_ready
from tests.helpers import PROJECT_ROOT, wait_for

MAKE_PAYMENT = [
    "curl", "-s", "-X", "POST", "{ingress}/payments/my-payment-id/makePayment",
    "-H", "content-type: application/json", "-d", '{"accountId": "abc", "amount": 100}',
]  # fmt: skip
CANCEL_PAYMENT = ["curl", "-s", "-X", "POST", "{ingress}/payments/my-payment-id/cancelPayment"]


class MakeRun:
    """`make run` in its own process group, as a terminal would start it."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = Settings(data_dir=data_dir, **free_ports())
        self.output = data_dir.parent / f"{data_dir.name}-make-run.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.output.open("ab") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "run"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **self.settings.to_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_ready(self.settings, self.process, self.output)

    def processes(self) -> list[psutil.Process]:
        assert self.process is not None
        make = psutil.Process(self.process.pid)
        return [make, *make.children(recursive=True)]

    def curl(self, command: list[str]) -> dict[str, object]:
        argv = [part.replace("{ingress}", self.settings.ingress_url) for part in command]
        answer: dict[str, object] = json.loads(subprocess.check_output(argv, timeout=60))
        return answer

    def pid(self, part: str) -> int:
        return int((self.settings.data_dir / f"{part}.pid").read_text())

    def terminate(self, signum: signal.Signals = signal.SIGTERM) -> list[psutil.Process]:
        """Signal the process group: SIGTERM like a service manager, SIGHUP like closing the terminal.

        Returns the survivors.
        """
        everything = self.processes()
        assert self.process is not None
        os.killpg(self.process.pid, signum)
        _, alive = psutil.wait_procs(everything, timeout=15)
        return alive

    def ports_free(self) -> bool:
        s = self.settings
        ports = (s.ingress_port, s.admin_port, s.node_port, s.service_port)
        return all(port_is_free(s.host, port) for port in ports)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    run = MakeRun(tmp_path / "data")
    yield run
    if run.process is not None and run.process.poll() is None:
        for process in run.processes():
            process.kill()


def test_make_run_serves_survives_kill_9_and_stops_cleanly(make_run: MakeRun) -> None:
    make_run.start()
    printed = make_run.output.read_text()
    assert (
        f"curl -X POST localhost:{make_run.settings.ingress_port}/payments/my-payment-id/makePayment"
        in printed
    )
    assert f"{make_run.settings.admin_url}/ui/" in printed
    ready_file = make_run.settings.ready_file
    wait_for(ready_file.exists, "payments up to write its ready file")
    assert int(ready_file.read_text()) in {process.pid for process in make_run.processes()}
    data_dir = make_run.settings.data_dir
    ours = (data_dir, *data_dir.iterdir(), *(data_dir / "logs").iterdir(), *(data_dir / "identity").iterdir())
    # Started by root, PostgreSQL runs as nobody, who may pass through (not list) the data directory.
    passable = {data_dir: 0o011} if os.geteuid() == 0 else {}
    open_to_others = [
        path for path in ours if stat.S_IMODE(path.stat().st_mode) & 0o077 & ~passable.get(path, 0)
    ]
    assert open_to_others == []

    assert make_run.curl(MAKE_PAYMENT)["outcome"] == "completed"
    page = httpx.get(f"{make_run.settings.console_url}/payments/my-payment-id", timeout=30)
    assert page.status_code == 200
    assert "<h1><code>my-payment-id</code>" in page.text
    assert 'id="state">COMPLETED</span>' in page.text
    service = make_run.pid("service")
    os.kill(service, signal.SIGKILL)
    wait_for(lambda: make_run.pid("service") != service, "the service to be restarted")
    assert make_run.curl(MAKE_PAYMENT)["outcome"] == "repeated"

    survivors = make_run.terminate()
    assert survivors == []
    assert not ready_file.exists()
    assert make_run.process is not None
    assert make_run.process.wait(10) is not None
    wait_for(make_run.ports_free, "the ports to be free", timeout=10)

    make_run.start()
    assert make_run.curl(MAKE_PAYMENT)["outcome"] == "repeated"
    assert make_run.curl(CANCEL_PAYMENT)["outcome"] == "refunded"
    assert make_run.terminate(signal.SIGHUP) == []
    assert not ready_file.exists()
