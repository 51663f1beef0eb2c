"""What ``payments bench`` measures and where it writes; light, since every command's parser uses it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchOptions:
    """How long and how hard to load the stack."""

    concurrencies: tuple[int, ...] = (1, 16, 64)
    warmup_seconds: float = 5.0
    measure_seconds: float = 20.0
    output: Path = Path("results/bench.json")
    plot: Path | None = Path("results/bench.png")
    env: dict[str, str] = field(default_factory=dict)
    """Extra ``PAYMENTS_*``/``RESTATE_*`` variables for the stack, for experiments."""

    @classmethod
    def quick(cls, **changes: Any) -> BenchOptions:
        """Settings that finish in about a minute."""
        return dataclasses.replace(cls(warmup_seconds=2.0, measure_seconds=5.0), **changes)
