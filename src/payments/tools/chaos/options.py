"""What a chaos run does: :class:`ChaosOptions`, with the defaults of ``payments chaos`` and their checks.

``payments.cli`` builds the command's parser from these defaults for every command it runs, so this
module imports nothing heavy: no HTTP client, no process tools, no launcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from payments.config import MAX_EXPIRY_SECONDS, MAX_NODES, Part

PARTS: Final[tuple[Part, ...]] = (Part.SERVICE, Part.RESTATE_SERVER, Part.DATABASE)
"""The processes a run may kill, in the order reports list them."""


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """What a chaos run does; the defaults are those of ``payments chaos``."""

    duration: float = 60.0
    ids: int = 600
    accounts: int = 10
    concurrency: int = 64
    seed: int | None = None
    nodes: int = 1
    """restate-server nodes of the stack: 1, or a cluster."""
    max_nodes_down: int = 1
    """How many of the nodes may be down at once; more than a minority stalls every call."""
    kill_service: bool = True
    kill_server: bool = True
    kill_database: bool = True
    """SIGKILL the stack's PostgreSQL too; payments wait for it (their durable steps retry)."""
    kill_min: float = 1.0
    """Seconds a (re)started process runs at least before it is killed; the most is ``kill_max``."""
    kill_max: float = 12.0
    settle_timeout: float = 300.0
    expiry: float | None = None
    """The stack's expiry window (``PAYMENTS_EXPIRY_SECONDS``) in seconds; None keeps the day it has
    by default, which no run outlasts. A few seconds make ids go through several lifecycles."""
    data_dir: Path | None = None
    """Where the stack keeps its data; None for a fresh temporary directory, removed after a clean run."""

    def validate(self) -> None:
        """Refuse options a run cannot go with, naming the option."""
        if self.duration <= 0:
            raise ValueError("--duration must be positive")
        for name in ("ids", "accounts", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if self.expiry is not None and not 0 < self.expiry <= MAX_EXPIRY_SECONDS:
            raise ValueError(f"--expiry must be more than 0 and at most {MAX_EXPIRY_SECONDS:.0f}")
        if not 0 < self.kill_min <= self.kill_max:
            raise ValueError("--kill-min must be positive and at most --kill-max")
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"--nodes must be 1 to {MAX_NODES}")
        if not 1 <= self.max_nodes_down <= self.nodes:
            raise ValueError("--max-nodes-down must be at least 1 and at most --nodes")
        if self.data_dir is not None and self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ValueError(f"--data-dir {self.data_dir} is not empty; a chaos run needs a fresh one")

    @property
    def parts_to_kill(self) -> tuple[Part, ...]:
        """The processes the run kills."""
        wanted = {
            Part.SERVICE: self.kill_service,
            Part.RESTATE_SERVER: self.kill_server,
            Part.DATABASE: self.kill_database,
        }
        return tuple(part for part in PARTS if wanted[part])
