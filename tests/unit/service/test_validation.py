"""The contract's "Bad input" section: every rejection names its field."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.domain.state_machine import Charge
from payments.service.handlers import MAX_MESSAGE_LENGTH, rejection
from payments.service.validation import (
    ID_MAX_LENGTH,
    MAX_AMOUNT,
    MAX_BODY_BYTES,
    QUOTE_LENGTH,
    InvalidInputError,
    parse_amount,
    parse_id,
    parse_payment_request,
    parse_statement_request,
    printable,
)

ID_ALPHABET = string.ascii_letters + string.digits + "-_.:"
LONGEST_ID = (ID_ALPHABET * 2)[:ID_MAX_LENGTH]


def body(account: str = '"abc"', amount: str = "100") -> bytes:
    """A makePayment body with the given JSON texts for its two fields."""
    return f'{{"accountId": {account}, "amount": {amount}}}'.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_AMOUNTS = {
    "string": '"100"',
    "fraction": "1.5",
    "float-integral": "100.0",
    "exponent": "1e2",
    "bool": "true",
    "null": "null",
    "word": '"abc"',
    "zero": "0",
    "negative": "-1",
    "above-max": str(MAX_AMOUNT + 1),
    "4000-digits": "9" * 4000,
}

BAD_BODIES = {
    **{f"amount-{name}": (body(amount=text), "amount") for name, text in BAD_AMOUNTS.items()},
    "amount-missing": (b'{"accountId": "abc"}', "amount"),
    "account-missing": (b'{"amount": 100}', "accountId"),
    "account-empty": (body(account='""'), "accountId"),
    "account-number": (body(account="5"), "accountId"),
    "account-129-chars": (body(account=f'"{"a" * (ID_MAX_LENGTH + 1)}"'), "accountId"),
    "account-space": (body(account='"a b"'), "accountId"),
    "account-unicode": (body(account='"é"'), "accountId"),
    "account-nul": (body(account='"a\\u0000b"'), "accountId"),
    "account-newline": (body(account='"a\\nb"'), "accountId"),
    "account-trailing-newline": (body(account='"abc\\n"'), "accountId"),
    "unknown-field": (b'{"accountId": "abc", "amount": 100, "currency": "EUR"}', "currency"),
    "duplicate-key": (b'{"accountId": "abc", "amount": 1, "amount": 100}', "amount"),
    "nested-duplicate-key": (body(amount='{"a": 1, "a": 2}'), "a"),
    "lone-surrogate-duplicate-key": (b'{"\\ud800": 1, "\\ud800": 2}', "\\ud800"),
    "lone-surrogate-nested-duplicate-key": (body(amount='{"\\ud800": 1, "\\ud800": 2}'), "\\ud800"),
    "lone-surrogate-unknown-key": (b'{"accountId": "abc", "amount": 1, "\\udfff": 1}', "\\udfff"),
    "lone-surrogate-account": (body(account='"\\ud800"'), "accountId"),
    "half-a-surrogate-pair": (body(account='"a\\ud83d"'), "accountId"),
    "lone-surrogate-nested-value": (body(amount='{"a": ["x", "\\udc00"]}'), "amount.a.1"),
    "lone-surrogate-top-level": (b'"\\ud800"', "body"),
    "escapes-in-unknown-key": (
        b'{"accountId": "abc", "amount": 1, "a\\u0000\\n\\u00e9": 1}',
        "a\\x00\\n\\xe9",
    ),
    "surrogate-as-utf8-bytes": (b'{"accountId": "\xed\xa0\x80", "amount": 1}', "body"),
    "not-json": (b'{"accountId": "abc", "amount": 100', "body"),
    "not-an-object": (b"[]", "body"),
    "not-utf8": (b"\xff", "body"),
    "latin1": ('{"accountId": "é", "amount": 100}'.encode("latin-1"), "body"),
    "empty": (b"", "body"),
    "nan": (body(amount="NaN"), "body"),
    "infinity": (body(amount="Infinity"), "body"),
    "minus-infinity": (body(amount="-Infinity"), "body"),
    "too-large": (body() + b" " * MAX_BODY_BYTES, "body"),
    "nested-9-deep": (body(amount=nested(9)), "body"),
    "nested-2000-deep": (body(amount=nested(2000)), "body"),
    "5000-digit-integer": (body(amount="9" * 5000), "body"),
}


@pytest.mark.parametrize(("raw", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_payment_body_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_payment_request(raw)

    assert str(caught.value).startswith(f"{field}: ")


BAD_DEPOSITS = {
    **{name: text.encode() for name, text in BAD_AMOUNTS.items()},
    "object": body(),
}


@pytest.mark.parametrize("raw", BAD_DEPOSITS.values(), ids=BAD_DEPOSITS.keys())
def test_bad_deposit_amount_names_amount(raw: bytes) -> None:
    with pytest.raises(InvalidInputError, match=r"^amount: "):
        parse_amount(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff", b"1e", b"NaN", b" " * MAX_BODY_BYTES + b"1", nested(9).encode(), b'"\\ud800"'],
    ids=["empty", "not-utf8", "not-json", "nan", "too-large", "nested", "lone-surrogate"],
)
def test_bad_deposit_body_names_body(raw: bytes) -> None:
    with pytest.raises(InvalidInputError, match=r"^body: "):
        parse_amount(raw)


def test_nesting_deeper_than_the_recursion_limit_is_invalid_input() -> None:
    """json.loads decodes a 1.4 kB body nested 700 levels deep; measuring it must not recurse, or a
    RecursionError would escape as a retryable error and block the payment id."""
    with pytest.raises(InvalidInputError, match=r"^body: "):
        parse_payment_request(body(amount=nested(700)))


@pytest.mark.parametrize(
    ("raw", "charge"),
    [
        (b'{"accountId":"abc","amount":100}', Charge("abc", 100)),
        (b' {\n"amount": 1,\t"accountId": "a"} ', Charge("a", 1)),
        (body(amount=str(MAX_AMOUNT)), Charge("abc", MAX_AMOUNT)),
        (body(account=f'"{LONGEST_ID}"'), Charge(LONGEST_ID, 100)),
        (body(account='"\\u0061bc"'), Charge("abc", 100)),
    ],
    ids=["compact", "whitespace-and-order", "max-amount", "longest-id", "escaped"],
)
def test_valid_payment_body_parses_to_its_charge(raw: bytes, charge: Charge) -> None:
    assert parse_payment_request(raw) == charge


@pytest.mark.parametrize(
    ("raw", "amount"),
    [(b"100", 100), (b" 1\n", 1), (str(MAX_AMOUNT).encode(), MAX_AMOUNT)],
    ids=["plain", "whitespace", "max"],
)
def test_valid_deposit_parses_to_its_amount(raw: bytes, amount: int) -> None:
    assert parse_amount(raw) == amount


@pytest.mark.parametrize(
    "value", ["a", ":", LONGEST_ID], ids=["one-letter", "one-symbol", "128-chars-full-alphabet"]
)
def test_parse_id_accepts_the_id_alphabet(value: str) -> None:
    assert parse_id(value, "paymentId") == value


@pytest.mark.parametrize("field", ["paymentId", "accountId"])
@pytest.mark.parametrize(
    "value",
    ["a" * (ID_MAX_LENGTH + 1), "", "a b", "é", "a/b", "/", "a\x00b", "abc\n", "\uff41bc"],
    ids=[
        "129-chars",
        "empty",
        "space",
        "unicode",
        "slash",
        "only-slash",
        "nul",
        "trailing-newline",
        "fullwidth",
    ],
)
def test_parse_id_rejects_and_names_the_field(value: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_id(value, field)

    assert str(caught.value).startswith(f"{field}: ")


def test_a_long_key_is_quoted_short() -> None:
    key = "k" * 2000
    with pytest.raises(InvalidInputError) as caught:
        parse_payment_request(f'{{"accountId": "abc", "amount": 1, "{key}": 1}}'.encode())

    assert str(caught.value).startswith(f"{'k' * QUOTE_LENGTH}...: ")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amount", "amount"),
        ("\ud800x", "\\ud800x"),
        ("a\\b\x07\u00e9", "a\\\\b\\x07\\xe9"),
        ("ab" * 40, "ab" * 32 + "..."),
    ],
    ids=["plain", "lone-surrogate", "backslash-control-latin", "long"],
)
def test_printable_escapes_and_bounds_what_it_quotes(text: str, shown: str) -> None:
    assert printable(text) == shown


hostile_text = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=20)
hostile_documents = st.recursive(
    st.none() | st.integers() | hostile_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3),
    max_leaves=8,
)
hostile_bodies = st.one_of(
    st.binary(max_size=64),
    hostile_documents.map(lambda document: json.dumps(document).encode()),
    st.builds(
        lambda key, document: f'{{"accountId": "abc", "amount": 1, {key}: 1, {key}: {document}}}'.encode(
            "utf-8", "surrogatepass"
        ),
        hostile_text.map(json.dumps),
        hostile_documents.map(json.dumps),
    ),
)


@given(raw=hostile_bodies)
def test_every_refusal_is_a_message_the_sdk_can_send(raw: bytes) -> None:
    """Whatever the bytes: parsed, or refused with a message that encodes as UTF-8 and names a field."""
    for parse in (parse_payment_request, parse_amount):
        try:
            parse(raw)
        except InvalidInputError as error:
            message = str(error)
            message.encode("utf-8")
            assert ": " in message


@pytest.mark.parametrize(
    "message", ["\ud800: appears more than once", "x" * 100_000], ids=["lone-surrogate", "huge"]
)
def test_a_rejection_can_always_be_sent(message: str) -> None:
    """The last line of defence for messages the validation did not escape."""
    error = rejection(message, 400)

    assert error.message.encode("utf-8")
    assert len(error.message) <= MAX_MESSAGE_LENGTH
    assert error.status_code == 400


@pytest.mark.parametrize(
    ("raw", "before", "limit"),
    [(b"", None, 20), (b" ", None, 20), (b"{}", None, 20), (b'{"before": 7, "limit": 100}', 7, 100)],
    ids=["empty", "blank", "object", "both"],
)
def test_a_statement_request_defaults_to_the_newest_page(raw: bytes, before: int | None, limit: int) -> None:
    page = parse_statement_request(raw)

    assert (page.before, page.limit) == (before, limit)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"limit": 0}', "limit"),
        (b'{"limit": 101}', "limit"),
        (b'{"limit": true}', "limit"),
        (b'{"before": -1}', "before"),
        (b'{"before": 9223372036854775808}', "before"),
        (b'{"before": "7"}', "before"),
        (b'{"cursor": 1}', "cursor"),
        (b"7", "body"),
        (b'{"limit": 1, "limit": 1}', "limit"),
    ],
    ids=[
        "limit-0",
        "limit-101",
        "limit-bool",
        "before-negative",
        "before-beyond-bigint",
        "before-text",
        "unknown",
        "not-an-object",
        "twice",
    ],
)
def test_a_bad_statement_request_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: "):
        parse_statement_request(raw)
