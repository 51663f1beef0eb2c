"""Generated requests through the ingress: never a 5xx, and a refused call changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.service.answers import BalanceAnswer, DepositAnswer, PaymentAnswer
from payments.service.validation import ID_MAX_LENGTH, MAX_AMOUNT, MAX_BODY_BYTES
from payments.tools.launcher import LaunchedStack

WATCHED_PAYMENTS = ("fz-p1", "fz-p2")
WATCHED_ACCOUNTS = ("fz-a1", "fz-a2")
EXAMPLES = 250
ANSWER_SECONDS = 20.0
"""A generous bound on any answer: a refused call takes milliseconds, one on a held key never returns."""

# Lone surrogates (what a JSON escape such as "\ud800" decodes to) next to any other character.
hostile_text = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=40)
json_escapes = st.lists(
    st.sampled_from(
        ["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\ud83d", "\\u0000", "\\n", "\\\\", '\\"', "a"]
    ),
    min_size=1,
    max_size=6,
).map("".join)
"""The inside of a JSON string written with escapes, as a client may send it."""
invalid_utf8 = st.sampled_from([b"\xed\xa0\x80", b"\xff", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82"])

valid_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:",
    min_size=1,
    max_size=ID_MAX_LENGTH,
)
any_ids = st.one_of(
    valid_ids,
    st.text(max_size=ID_MAX_LENGTH + 50),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=ID_MAX_LENGTH, max_size=400),
    hostile_text,
    json_escapes,
)


def url_ids(watched: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Ids as they appear in a URL, half of them watched.

    The others are any text (lone surrogates included) as percent-escaped UTF-8, or a valid id
    followed by bytes that are not UTF-8.
    """
    return st.one_of(
        st.sampled_from(watched),
        st.one_of(
            any_ids.map(lambda key: quote(key.encode("utf-8", "surrogatepass"), safe="")),
            st.builds(lambda key, junk: quote(key.encode() + junk, safe=""), valid_ids, invalid_utf8),
        ),
    )


account_ids = st.one_of(st.sampled_from(WATCHED_ACCOUNTS), any_ids)
amounts = st.one_of(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, MAX_AMOUNT, MAX_AMOUNT + 1, 2**53, 2**53 + 1, 10**400]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text() | hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)
payment_bodies = st.one_of(
    st.builds(lambda a, n: {"accountId": a, "amount": n}, account_ids, amounts),
    st.builds(lambda a, n, v: {"accountId": a, "amount": n, "extra": v}, account_ids, amounts, json_values),
    st.builds(lambda k, v: {"accountId": "fz-a1", "amount": 1, k: v}, hostile_text, json_values),
    st.dictionaries(st.sampled_from(["accountId", "amount", "x"]), json_values),
    json_values,
).map(lambda document: json.dumps(document).encode())
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda a, n, m: f'{{"accountId": {json.dumps(a)}, "amount": {n}, "amount": {m}}}'.encode(),
        account_ids,
        amounts,
        amounts,
    ),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.sampled_from([b"", b" " * (MAX_BODY_BYTES + 1), b"1" * 70_000, b"NaN", b"Infinity"]),
)
deposit_bodies = st.one_of(
    amounts.map(lambda n: str(n).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_escapes.map(lambda text: f'"{text}"'.encode()),
)
duplicated_escaped_keys = st.builds(
    lambda key, nested: (
        f'{{"{key}": 1, "{key}": 2}}'
        if not nested
        else f'{{"accountId": "fz-a1", "amount": {{"{key}": 1, "{key}": 2}}}}'
    ).encode(),
    json_escapes,
    st.booleans(),
)
escaped_bodies = st.one_of(
    # The same key twice, written with escapes, at the top or nested: the review's freeze, listed
    # twice so that it is drawn most often.
    duplicated_escaped_keys,
    duplicated_escaped_keys,
    st.builds(
        lambda key, value: f'{{"accountId": "fz-a1", "amount": 1, "{key}": "{value}"}}'.encode(),
        json_escapes,
        json_escapes,
    ),
    st.builds(
        lambda junk, key: b'{"' + key + b'": 1, "accountId": "' + junk + b'"}', invalid_utf8, invalid_utf8
    ),
)
"""Bodies with JSON escapes (lone surrogates among them) in keys and values, or invalid UTF-8."""
content_types = st.sampled_from(
    ["application/json"] * 4 + ["text/plain", "", "application/json; charset=latin-1"]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """A path, a body and a content type, for any handler, public or not."""
    # The handlers that read a body are drawn three times as often: the body is most of what a client sends.
    target = draw(
        st.sampled_from(
            ["makePayment", "deposit"] * 3
            + ["cancelPayment", "getStatus", "expireToken", "balance", "withdraw", "refund"]
        )
    )
    service = (
        "payments" if target in {"makePayment", "cancelPayment", "getStatus", "expireToken"} else "accounts"
    )
    key = draw(url_ids(WATCHED_PAYMENTS if service == "payments" else WATCHED_ACCOUNTS))
    body_strategy = {
        "makePayment": st.one_of(escaped_bodies, st.one_of(payment_bodies, raw_bodies)),
        "deposit": st.one_of(escaped_bodies, st.one_of(deposit_bodies, raw_bodies)),
        "withdraw": deposit_bodies,
        "refund": deposit_bodies,
    }.get(target, st.sampled_from([b"", b"{}"]))
    return f"/{service}/{key}/{target}", draw(body_strategy), draw(content_types)


@pytest.fixture(scope="module")
def http(stack: LaunchedStack) -> Iterator[httpx.Client]:
    # The ingress may drop a keep-alive connection after refusing a request early (a fuzzed one, or
    # the probe of a hostile key), without a word: every request goes on a connection of its own.
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(
        base_url=stack.settings.ingress_url, timeout=ANSWER_SECONDS, limits=no_keep_alive
    ) as client:
        yield client


def snapshot(http: httpx.Client) -> list[object]:
    """The state a refused call must leave alone."""
    paths = [f"/payments/{p}/getStatus" for p in WATCHED_PAYMENTS]
    paths += [f"/accounts/{a}/balance" for a in WATCHED_ACCOUNTS]
    return [http.post(path).json() for path in paths]


def assert_key_answers(http: httpx.Client, path: str) -> None:
    """An exclusive call on the key of ``path`` is answered: nothing left running holds the key.

    The probe is refused (an empty payment, a deposit of 0) and so changes nothing; getStatus and
    balance would not do, since shared handlers answer even while the key is held.
    """
    service, key = path.split("/")[1:3]
    probe = "/payments/{}/makePayment" if service == "payments" else "/accounts/{}/deposit"
    content = b"{}" if service == "payments" else b"0"
    response = http.post(probe.format(key), content=content, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (path, response.text)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_generated_requests_get_a_4xx_or_a_valid_answer(
    http: httpx.Client, request: tuple[str, bytes, str]
) -> None:
    path, body, content_type = request
    before = snapshot(http)
    headers = {"content-type": content_type} if content_type else {}
    response = http.post(path, content=body, headers=headers)
    assert response.status_code < 500, (path, body[:200], response.text)
    if response.is_success:
        shapes = {"deposit": DepositAnswer, "balance": BalanceAnswer}
        shapes.get(path.rsplit("/", 1)[-1], PaymentAnswer).model_validate_json(response.content)
    else:
        assert 400 <= response.status_code < 500
        assert snapshot(http) == before, (path, body[:200], response.text)
    assert_key_answers(http, path)
