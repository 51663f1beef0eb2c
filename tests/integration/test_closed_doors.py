"""Nothing is reachable that should not be: signed service calls, loopback-only ports."""

from __future__ import annotations

import stat

import httpx
import psutil
import pytest

from payments.client import PaymentsClient
from payments.config import Part
from payments.tools.launcher import LaunchedStack

pytestmark = pytest.mark.anyio


async def test_a_call_straight_to_the_service_port_is_refused_and_changes_nothing(
    stack: LaunchedStack, client: PaymentsClient, unique: str
) -> None:
    account = f"{unique}-a"
    before = (await client.balance(account)).balance
    async with httpx.AsyncClient(base_url=stack.settings.service_url, timeout=10) as direct:
        response = await direct.post(
            "/invoke/accounts/deposit",
            content=b"500",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 401
    assert (await client.balance(account)).balance == before


def test_the_signing_key_is_readable_by_its_owner_only(stack: LaunchedStack) -> None:
    key = stack.settings.signing_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_every_port_listens_on_loopback_only(stack: LaunchedStack) -> None:
    listening = {
        (connection.laddr.ip, connection.laddr.port)
        for part in Part
        for connection in psutil.Process(stack.pid(part)).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    settings = stack.settings
    expected_ports = {settings.ingress_port, settings.admin_port, settings.service_port}
    assert expected_ports <= {port for _, port in listening}
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
