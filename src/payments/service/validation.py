"""Strict parsing of everything a client sends: ids in the URL and JSON bodies.

A request is either fully valid or rejected with :class:`InvalidInputError`, whose message names the
offending field; a rejected request never reaches the state machine, so it changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, Final

import pydantic
from pydantic import ConfigDict, Field, StringConstraints

from payments.domain.state_machine import Charge

ID_MAX_LENGTH: Final = 128
IDEMPOTENCY_HEADER: Final = "idempotency-key"
"""Restate's header for a request's idempotency key: an id like any other (the same alphabet)."""
ID_PATTERN: Final = r"^[A-Za-z0-9_.:\-]+$"
MAX_AMOUNT: Final = 1_000_000_000_000
"""Largest amount in cents of one payment or deposit: 10 billion in whole units."""
MAX_BODY_BYTES: Final = 4096
"""Largest request body accepted; the largest valid one is far smaller."""
MAX_JSON_DEPTH: Final = 8
MAX_PAGE: Final = 100
"""Most entries in one page of a statement."""
MAX_ENTRY_ID: Final = 2**63 - 1
"""Largest ledger entry id (a bigint), so the largest statement cursor."""
DEFAULT_PAGE: Final = 20
QUOTE_LENGTH: Final = 64
"""Most characters of client input an error message repeats."""
_ID_ALPHABET: Final = "may only contain ASCII letters, digits and the characters - _ . :"

Id = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN),
]
"""A payment id or account id: 1 to 128 ASCII letters, digits and ``-_.:``."""

Amount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
"""A positive number of cents, given as a JSON integer."""


class InvalidInputError(ValueError):
    """A request that breaks the input rules; the message names the field."""


def printable(text: str, limit: int = QUOTE_LENGTH) -> str:
    """``text`` as printable ASCII, for messages that repeat client input.

    Backslash escapes stand for everything else, lone surrogates included: the SDK cannot encode
    those, and a handler whose error message it cannot send is retried for ever while it holds its
    key. At most ``limit`` characters are shown.
    """
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


class PaymentRequest(pydantic.BaseModel):
    """The body of makePayment."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    accountId: Id  # noqa: N815 - the wire name of the original API
    amount: Amount

    def charge(self) -> Charge:
        """The charge this request asks for."""
        return Charge(self.accountId, self.amount)


class StatementRequest(pydantic.BaseModel):
    """The body of statement, all of it optional: which page, and how long."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    before: Annotated[int, Field(strict=True, ge=1, le=MAX_ENTRY_ID)] | None = None
    """The ``nextBefore`` of the previous page; none for the newest entries."""
    limit: Annotated[int, Field(strict=True, ge=1, le=MAX_PAGE)] = DEFAULT_PAGE


_ID_ADAPTER: Final = pydantic.TypeAdapter(Id)
_AMOUNT_ADAPTER: Final = pydantic.TypeAdapter(Amount)


def parse_id(value: str, field: str) -> str:
    """Check a payment id or account id taken from the URL."""
    try:
        return _ID_ADAPTER.validate_python(value)
    except pydantic.ValidationError as error:
        raise InvalidInputError(_describe(error, field)) from None


def parse_payment_request(body: bytes) -> Charge:
    """Parse a makePayment body into the charge it asks for."""
    document = parse_json(body)
    try:
        return PaymentRequest.model_validate(document).charge()
    except pydantic.ValidationError as error:
        raise InvalidInputError(_describe(error, "body")) from None


def parse_amount(body: bytes) -> int:
    """Parse a deposit body: one JSON integer of cents."""
    document = parse_json(body)
    try:
        return _AMOUNT_ADAPTER.validate_python(document)
    except pydantic.ValidationError as error:
        raise InvalidInputError(_describe(error, "amount")) from None


def parse_statement_request(body: bytes) -> StatementRequest:
    """Parse a statement body: empty for the first page of the default length, else a JSON object."""
    if not body.strip():
        return StatementRequest()
    try:
        return StatementRequest.model_validate(parse_json(body))
    except pydantic.ValidationError as error:
        raise InvalidInputError(_describe(error, "body")) from None


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body, refusing what two JSON parsers could read differently."""
    if not body:
        raise InvalidInputError("body: a JSON body is required")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInputError(f"body: larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("body: not valid UTF-8") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except InvalidInputError:
        raise
    except (ValueError, RecursionError) as error:
        raise InvalidInputError(f"body: not valid JSON ({error})") from None
    _check_tree(document)
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        _check_unicode(key, key)
        if key in document:
            raise InvalidInputError(f"{printable(key)}: appears more than once in one object")
        document[key] = value
    return document


def _check_unicode(text: str, field: str) -> None:
    r"""Refuse a string with a lone surrogate, which a JSON escape such as ``"\ud800"`` decodes to."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{printable(field) or 'body'}: not valid Unicode (a lone surrogate such as \\ud800)"
        ) from None


def _reject_constant(name: str) -> Any:
    raise InvalidInputError(f"body: {name} is not a JSON number")


def _check_tree(document: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` and strings that are not valid Unicode."""
    # Iterative: json.loads accepts nesting deeper than Python's recursion limit.
    pending: list[tuple[Any, int, str]] = [(document, 1, "")]
    while pending:
        value, depth, path = pending.pop()
        if isinstance(value, str):
            _check_unicode(value, path)
            continue
        if isinstance(value, dict):
            children: Iterable[tuple[object, Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidInputError(f"body: nested deeper than {MAX_JSON_DEPTH} levels")
        pending.extend(
            (child, depth + 1, f"{path}.{name}" if path else str(name)) for name, child in children
        )


def _describe(error: pydantic.ValidationError, whole: str) -> str:
    """One line per problem, each starting with the field it is about."""
    problems = []
    for item in error.errors(include_url=False):
        field = printable(".".join(str(part) for part in item["loc"])) or whole
        message = _ID_ALPHABET if item["type"] == "string_pattern_mismatch" else item["msg"]
        problems.append(f"{field}: {message}")
    return "; ".join(problems)
