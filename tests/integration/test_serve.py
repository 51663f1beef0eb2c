"""The service process on its own: it answers only restate-server, and SIGTERM stops it cleanly."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from payments.config import Settings
from payments.runtime import identity
from payments.runtime.processes import free_port
from payments.tools.launcher import LaunchedDatabase
from tests.helpers import fresh_database, wait_for

DISCOVERY = {"accept": "application/vnd.restate.endpointmanifest.v3+json"}


def start_service(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "payments.service.serve"],
            env={**os.environ, **settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def service(
    tmp_path: Path, migrated_database: LaunchedDatabase
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    key = identity.ensure_private_key(tmp_path / "private.pem")
    settings = Settings(
        service_port=free_port(),
        data_dir=tmp_path,
        identity_key=identity.public_key(key),
        database_url=migrated_database.url,
    )
    process = start_service(settings, tmp_path / "service.log")
    with httpx.Client(base_url=settings.service_url, timeout=2) as http:

        def healthy() -> bool:
            try:
                return http.get("/health").is_success
            except httpx.TransportError:
                return False

        wait_for(healthy, "the service to answer")
        yield process, http
    process.kill()
    process.wait()


def signed_by_another_key(path: str) -> dict[str, str]:
    """Headers shaped like restate-server's request identity, signed by a key nobody trusts."""

    def encode(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    now = int(time.time())
    header = encode(json.dumps({"typ": "JWT", "alg": "EdDSA"}).encode())
    claims = encode(json.dumps({"aud": path, "iat": now, "nbf": now, "exp": now + 60}).encode())
    signature = encode(Ed25519PrivateKey.generate().sign(f"{header}.{claims}".encode()))
    return {"x-restate-signature-scheme": "v1", "x-restate-jwt-v1": f"{header}.{claims}.{signature}"}


def test_service_refuses_to_start_without_an_identity_key(tmp_path: Path) -> None:
    settings = Settings(service_port=free_port(), data_dir=tmp_path)
    process = start_service(settings, tmp_path / "service.log")
    assert process.wait(timeout=30) == 2
    assert "PAYMENTS_IDENTITY_KEY" in (tmp_path / "service.log").read_text()


@pytest.mark.parametrize("forged", [False, True], ids=["unsigned", "signed-by-another-key"])
@pytest.mark.parametrize("path", ["/discover", "/invoke/accounts/deposit", "/invoke/payments/makePayment"])
def test_requests_not_signed_by_restate_are_refused(
    service: tuple[subprocess.Popen[bytes], httpx.Client], path: str, forged: bool
) -> None:
    _, http = service
    headers = {**DISCOVERY, **(signed_by_another_key(path) if forged else {})}
    method = "GET" if path == "/discover" else "POST"
    response = http.request(method, path, headers=headers, content=b"5")
    assert response.status_code == 401


def test_service_stops_on_sigterm_after_serving(
    service: tuple[subprocess.Popen[bytes], httpx.Client],
) -> None:
    process, http = service
    # Any request hands SIGTERM to the SDK's handler; ours must still stop the server.
    assert http.get("/discover", headers=DISCOVERY).status_code == 401
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_service_exits_when_it_cannot_listen(tmp_path: Path, migrated_database: LaunchedDatabase) -> None:
    """A service that serves nothing must not stay alive: the supervisor restarts what exits."""
    key = identity.ensure_private_key(tmp_path / "private.pem")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            service_port=port,
            data_dir=tmp_path,
            identity_key=identity.public_key(key),
            database_url=migrated_database.url,
        )
        process = start_service(settings, tmp_path / "service.log")
        assert process.wait(timeout=30) != 0
    assert "Address already in use" in (tmp_path / "service.log").read_text()


def test_service_that_cannot_reach_the_ledger_exits_saying_so_in_a_line(tmp_path: Path) -> None:
    key = identity.ensure_private_key(tmp_path / "private.pem")
    nothing_listens = free_port()
    settings = Settings(
        service_port=free_port(),
        data_dir=tmp_path,
        identity_key=identity.public_key(key),
        database_url=f"postgresql://payments:a-secret@127.0.0.1:{nothing_listens}/payments",
    )
    process = start_service(settings, tmp_path / "service.log")

    assert process.wait(timeout=30) == 1
    log = (tmp_path / "service.log").read_text()
    assert "cannot reach the ledger (ConnectionRefusedError:" in log, log
    assert "Traceback" not in log
    assert "a-secret" not in log


@pytest.mark.anyio
async def test_service_on_a_ledger_not_yet_migrated_exits_saying_so_in_a_line(
    tmp_path: Path, database: LaunchedDatabase
) -> None:
    """The service's role may not migrate: it names what is missing and who must run it."""
    key = identity.ensure_private_key(tmp_path / "private.pem")
    settings = Settings(
        service_port=free_port(),
        data_dir=tmp_path,
        identity_key=identity.public_key(key),
        database_url=await fresh_database(database.url),
    )
    process = start_service(settings, tmp_path / "service.log")

    assert process.wait(timeout=30) == 1
    log = (tmp_path / "service.log").read_text()
    assert "lacks the migrations 0001_ledger" in log, log
    assert "payments migrate" in log
    assert "Traceback" not in log
