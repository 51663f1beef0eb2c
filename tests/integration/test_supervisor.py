"""``payments up`` itself: what it does when it is stopped before everything has started."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from payments import cli
from payments.config import Settings
from payments.runtime import identity, supervisor
from payments.tools.launcher import free_ports
from tests.helpers import wait_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A stack on free ports in a fresh data directory."""
    return Settings(data_dir=tmp_path / "data", **free_ports())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_during_the_start_stops_everything_at_once(
    settings: Settings, tmp_path: Path, signum: signal.Signals
) -> None:
    env = {**os.environ, **settings.to_env(), "PAYMENTS_SERVICE_MODULE": "tests.integration.never_serves"}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "payments.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    service_pid = settings.pid_file("service")
    # restate-server is up and the service started, which will never answer its health check.
    wait_for(service_pid.exists, "the service to be started")
    children = psutil.Process(up.pid).children(recursive=True)

    up.send_signal(signum)

    # Without stopping the start, payments up would wait out the service's 60 s start timeout.
    assert up.wait(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert not settings.ready_file.exists()
    assert "stopping before everything started" in (tmp_path / "up.log").read_text()


def supervise_interrupted_while_the_key_is_made(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Run ``payments up``'s supervisor in this process, with a Ctrl-C while it makes its signing key."""
    make_key = identity.ensure_private_key

    def interrupted(path: Path) -> Ed25519PrivateKey:
        os.kill(os.getpid(), signal.SIGINT)
        return make_key(path)

    monkeypatch.setattr(identity, "ensure_private_key", interrupted)
    said: list[str] = []
    children_before = set(psutil.Process().children())
    try:
        asyncio.run(supervisor.supervise(settings, said.append))
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped as a KeyboardInterrupt, which prints a traceback")
    assert set(psutil.Process().children()) <= children_before
    return said


def test_a_ctrl_c_before_the_supervisor_runs_stops_it_quietly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = supervise_interrupted_while_the_key_is_made(settings, monkeypatch)

    assert "stopping before everything started" in said
    assert not settings.ready_file.exists()


def test_the_data_directory_is_private_to_its_owner(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True)
    settings.data_dir.chmod(0o755)
    (logs / "service.log").write_text("from an older version\n")
    (logs / "service.log").chmod(0o644)

    said = supervise_interrupted_while_the_key_is_made(settings, monkeypatch)

    # Started by root, PostgreSQL runs as nobody, who must pass through (not list) the directory.
    private = 0o711 if os.geteuid() == 0 else 0o700
    assert (
        f"{settings.data_dir} was open to other users (mode 0755); it is private now ({private:04o})" in said
    )
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == private
    modes = {
        path.relative_to(settings.data_dir).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in settings.data_dir.rglob("*")
    }
    assert modes  # the key, the lock, the logs, restate-server's configuration
    assert {name: mode for name, mode in modes.items() if mode & 0o077} == {}


def test_a_directory_that_is_not_a_stacks_own_only_gets_a_note(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.data_dir.mkdir(parents=True)
    settings.data_dir.chmod(0o755)

    said = supervise_interrupted_while_the_key_is_made(settings, monkeypatch)

    assert f"`chmod 700 {settings.data_dir}`" in " ".join(said)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o755


def test_a_ctrl_c_before_the_event_loop_runs_the_supervisor_exits_130_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted_at_once(_settings: Settings) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(60)

    monkeypatch.setattr(supervisor, "supervise", interrupted_at_once)

    try:
        code = cli.main(["up", "--data-dir", str(tmp_path)])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped as a KeyboardInterrupt, which prints a traceback")
    assert code == 130
