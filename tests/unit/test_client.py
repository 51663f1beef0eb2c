"""The client's failover between ingress URLs, against fake nodes: no server needed."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import httpx
import pytest

from payments.client import (
    NotRunningError,
    PaymentsClient,
    ServiceError,
    is_retryable,
    pauses,
    rotated,
    until_answered,
)
from payments.service.validation import InvalidInputError

pytestmark = pytest.mark.anyio
NODES = ("http://n1:8080", "http://n2:8080", "http://n3:8080")
ANSWER = {
    "paymentId": "p1",
    "state": "COMPLETED",
    "outcome": "completed",
    "moneyMoved": True,
    "accountId": "a",
    "amount": 5,
    "reason": "payment completed",
}
Behaviour = Callable[[httpx.Request], httpx.Response]


def answers(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={**ANSWER, "paymentId": request.url.path.split("/")[2]})


def refuses(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def does_not_know_the_service(_request: httpx.Request) -> httpx.Response:
    message = "service 'payments' not found, make sure to register the service before calling it."
    return httpx.Response(404, json={"code": 404, "message": message})


def refuses_the_input(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(400, json={"code": 400, "message": "amount: Input should be greater than 0"})


def dies_mid_call(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("server disconnected", request=request)


class FakeNodes:
    """Nodes by host, each answering, refusing connections, or dying mid-call; records every attempt."""

    def __init__(self, **behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.attempts: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append((request.url.host, request.url.path))
        return self.behaviours[request.url.host](request)


def fake(nodes: FakeNodes, urls: tuple[str, ...] | str = NODES) -> PaymentsClient:
    client = PaymentsClient(urls)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(nodes))
    return client


async def test_a_single_url_still_works() -> None:
    nodes = FakeNodes(n1=answers)
    async with fake(nodes, NODES[0]) as client:
        assert (await client.make_payment("p1", "a", 5)).outcome == "completed"
    assert client.ingress_urls == (NODES[0],)
    assert nodes.attempts == [("n1", "/payments/p1/makePayment")]


async def test_a_refused_connection_sends_the_same_call_to_the_next_node() -> None:
    nodes = FakeNodes(n1=refuses, n2=answers, n3=answers)
    async with fake(nodes) as client:
        assert (await client.make_payment("p7", "a", 5)).paymentId == "p7"
        assert client.ingress_url == NODES[1]
        await client.get_status("p7")
    assert nodes.attempts == [
        ("n1", "/payments/p7/makePayment"),
        ("n2", "/payments/p7/makePayment"),
        ("n2", "/payments/p7/getStatus"),  # it stays on the node that answers
    ]


async def test_a_node_that_does_not_know_the_service_yet_hands_the_call_to_the_next() -> None:
    nodes = FakeNodes(n1=does_not_know_the_service, n2=answers, n3=answers)
    async with fake(nodes) as client:
        assert (await client.make_payment("p3", "a", 5)).paymentId == "p3"
    assert [host for host, _ in nodes.attempts] == ["n1", "n2"]


async def test_a_service_no_node_knows_is_a_404_and_a_refusal_is_not_sent_elsewhere() -> None:
    async with fake(
        FakeNodes(n1=does_not_know_the_service, n2=refuses, n3=does_not_know_the_service)
    ) as client:
        with pytest.raises(ServiceError, match="404: service 'payments' not found"):
            await client.get_status("p4")
    nodes = FakeNodes(n1=refuses_the_input, n2=answers, n3=answers)
    async with fake(nodes) as client:
        with pytest.raises(ServiceError, match="400: amount"):
            await client.make_payment("p5", "a", 0)
    assert [host for host, _ in nodes.attempts] == ["n1"]


async def test_no_node_answering_is_not_running() -> None:
    nodes = FakeNodes(n1=refuses, n2=refuses, n3=refuses)
    async with fake(nodes) as client:
        with pytest.raises(NotRunningError, match=r"n1.*n2.*n3"):
            await client.balance("a")
    assert [host for host, _ in nodes.attempts] == ["n1", "n2", "n3"]


async def test_each_call_tries_every_node_whatever_a_concurrent_call_moved() -> None:
    client = PaymentsClient(NODES)

    def refuses_while_another_call_moves_on(request: httpx.Request) -> httpx.Response:
        client._current = 1  # a call running beside this one failed here too and moved to n2
        return refuses(request)

    nodes = FakeNodes(n1=refuses_while_another_call_moves_on, n2=answers, n3=refuses)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(nodes))
    async with client:
        assert (await client.get_status("p2")).paymentId == "p2"
    assert [host for host, _ in nodes.attempts] == ["n1", "n2"]


async def test_a_node_dying_mid_call_is_left_and_the_retry_keeps_the_payment_id() -> None:
    nodes = FakeNodes(n1=dies_mid_call, n2=answers, n3=answers)
    async with fake(nodes) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.cancel_payment("p9")  # it may have happened: not resent on its own
        assert client.ingress_url == NODES[1]
        retried: list[BaseException] = []
        client._current = 0
        answer = await until_answered(
            lambda: client.make_payment("p9", "a", 5), first_pause_seconds=0, on_retry=retried.append
        )
    assert answer.paymentId == "p9"
    assert len(retried) == 1
    assert nodes.attempts[1:] == [("n1", "/payments/p9/makePayment"), ("n2", "/payments/p9/makePayment")]


HOSTILE = "x/../../payments/victim/cancelPayment#"
"""Sent unescaped, it became ``POST /payments/victim/cancelPayment``: a refund of someone else's payment."""
Call = Callable[[PaymentsClient], Awaitable[object]]
CALLS_WITH_A_HOSTILE_ID: dict[str, tuple[Call, str]] = {
    "get_status": (lambda c: c.get_status(HOSTILE), "paymentId"),
    "cancel_payment": (lambda c: c.cancel_payment(HOSTILE), "paymentId"),
    "make_payment": (lambda c: c.make_payment(HOSTILE, "a", 5), "paymentId"),
    "make_payment_account": (lambda c: c.make_payment("p1", HOSTILE, 5), "accountId"),
    "balance": (lambda c: c.balance(HOSTILE), "accountId"),
    "deposit": (lambda c: c.deposit(HOSTILE, 5), "accountId"),
    "deposit_key": (lambda c: c.deposit("a", 5, idempotency_key=HOSTILE), "idempotency-key"),
    "deposit_key_newline": (lambda c: c.deposit("a", 5, idempotency_key="k\n"), "idempotency-key"),
    "deposit_key_empty": (lambda c: c.deposit("a", 5, idempotency_key=""), "idempotency-key"),
}


@pytest.mark.parametrize(("call", "field"), CALLS_WITH_A_HOSTILE_ID.values(), ids=CALLS_WITH_A_HOSTILE_ID)
async def test_an_id_the_service_would_refuse_is_refused_before_anything_is_sent(
    call: Call, field: str
) -> None:
    nodes = FakeNodes(n1=answers)
    async with fake(nodes, NODES[0]) as client:
        with pytest.raises(InvalidInputError, match=f"^{field}: "):
            await call(client)
    assert nodes.attempts == []


@pytest.mark.parametrize(
    ("payment_id", "path"),
    [
        ("Az09-_.:", b"/payments/Az09-_%2E%3A/getStatus"),
        ("..", b"/payments/%2E%2E/getStatus"),
        (".", b"/payments/%2E/getStatus"),
    ],
    ids=["alphabet", "dot-dot", "dot"],
)
async def test_a_valid_id_is_sent_as_that_one_path_segment(payment_id: str, path: bytes) -> None:
    sent: list[bytes] = []

    def records(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.raw_path)
        return httpx.Response(200, json={**ANSWER, "paymentId": payment_id})

    client = PaymentsClient(NODES[0])
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(records))
    async with client:
        await client.get_status(payment_id)
    # Restate decodes the escapes back into the key; unescaped, "." and ".." would be path steps.
    assert sent == [path]


def at_first(failing: Behaviour, times: int) -> Behaviour:
    """``failing`` for the first ``times`` calls, then answers."""
    calls = 0

    def behaviour(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failing(request) if calls <= times else answers(request)

    return behaviour


async def test_a_restarted_single_node_that_does_not_know_the_service_yet_is_retried() -> None:
    nodes = FakeNodes(n1=at_first(does_not_know_the_service, 2))
    async with fake(nodes, NODES[0]) as client:
        answer = await until_answered(lambda: client.make_payment("p6", "a", 5), first_pause_seconds=0)
    assert answer.paymentId == "p6"
    assert len(nodes.attempts) == 3


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ServiceError(503, "unavailable"), True),
        (ServiceError(500, "internal"), True),
        (ServiceError(404, "service 'payments' not found"), True),
        (ServiceError(400, "amount: Input should be greater than 0"), False),
        (ServiceError(409, "payment id reused with different parameters"), False),
        (NotRunningError("nothing answers"), True),
        (httpx.ReadTimeout("timed out"), True),
        (ValueError("a bug"), False),
    ],
    ids=repr,
)
def test_what_is_sent_again(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PaymentsClient([])


def test_rotated_starts_each_client_at_another_node() -> None:
    assert [rotated(NODES, start)[0] for start in range(4)] == [NODES[0], NODES[1], NODES[2], NODES[0]]
    assert sorted(rotated(NODES, 5)) == sorted(NODES)


def test_pauses_double_up_to_the_most_each_between_half_and_all_of_it() -> None:
    waits = pauses(first=0.1, most=2.0, rng=random.Random(7))
    drawn = [next(waits) for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]

    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(drawn, ceilings, strict=True))
    assert len(set(drawn)) == len(drawn)
