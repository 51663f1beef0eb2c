"""The service process on its own: it serves, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from payments.config import Settings
from payments.processes import free_port
from tests.helpers import wait_for


def test_service_stops_on_sigterm_after_serving(tmp_path: Path) -> None:
    settings = Settings(service_port=free_port(), data_dir=tmp_path)
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "payments.serve"],
        env={**os.environ, **settings.to_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=settings.service_url, timeout=2) as http:

            def healthy() -> bool:
                try:
                    return http.get("/health").is_success
                except httpx.TransportError:
                    return False

            wait_for(healthy, "the service to answer")
            # Discovery is what restate-server asks first; after it the SDK owns SIGTERM.
            discovery = http.get(
                "/discover", headers={"accept": "application/vnd.restate.endpointmanifest.v3+json"}
            )
            assert discovery.is_success, discovery.text
            assert {s["name"] for s in discovery.json()["services"]} == {"payments", "accounts"}
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
    finally:
        service.kill()
        log.close()
