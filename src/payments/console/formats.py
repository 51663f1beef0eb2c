"""How the console writes amounts and times, on its pages and in its live feed alike."""

from __future__ import annotations

from datetime import UTC, datetime


def money(cents: int | None) -> str:
    """Cents as an amount with two decimals and thousands separators: ``-1,234.05``."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"


def moment(value: datetime | str | None) -> str:
    """A time in UTC to the second, the way every page shows it."""
    if value is None:
        return "—"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
