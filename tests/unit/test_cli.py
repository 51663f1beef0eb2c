"""The command line's pure parts."""

from __future__ import annotations

import pytest

from payments.cli import _without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://admin:s3cret@db.example:5432/ledger", "postgresql://admin@db.example:5432/ledger"),
        (
            "postgresql://admin@db.example/ledger?password=s3cret&sslmode=require",
            "postgresql://admin@db.example/ledger?sslmode=require",
        ),
        (
            "postgresql://payments@/payments?host=/srv/s&passfile=/srv/p",
            "postgresql://payments@/payments?host=/srv/s&passfile=/srv/p",
        ),
    ],
)
def test_a_url_in_a_message_has_no_password(url: str, shown: str) -> None:
    assert _without_password(url) == shown
