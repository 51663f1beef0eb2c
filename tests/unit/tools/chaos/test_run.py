"""How the chaos run counts a failed attempt, without a stack."""

from __future__ import annotations

import httpx
import pytest

from payments.client import NotRunningError, ServiceError
from payments.tools.chaos.run import may_have_run


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadError("connection reset"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
        (ServiceError(503, "unavailable"), True),
        (httpx.ConnectError("refused"), False),
        (NotRunningError("nothing answers"), False),
        (ServiceError(404, "service not found"), False),
    ],
)
def test_an_attempt_that_failed_mid_call_may_have_run(error: BaseException, expected: bool) -> None:
    assert may_have_run(error) is expected
