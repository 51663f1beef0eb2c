"""The progress line of a chaos run: the phase, the calls, the retries and the kills so far."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TextIO

REDRAW_SECONDS = 0.2


class Progress:
    """One line of progress: redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, *, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = float("-inf")
        self._drawn = False

    def show(self, line: str, *, force: bool = False) -> None:
        """Show ``line``; off a terminal, only if ``every`` seconds passed since the last one or forced."""
        now = time.monotonic()
        if self.tty:
            # A line wider than the terminal wraps, and a carriage return then redraws only its end.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write(f"\r\x1b[K{line[:width]}")
            self._drawn = True
        elif force or now - self._last >= self.every:
            self.stream.write(f"{line}\n")
            self._last = now
        self.stream.flush()

    def say(self, line: str) -> None:
        """Print a line that stays, below any line being redrawn."""
        self.finish()
        self.stream.write(f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the in-place line, so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


@contextlib.asynccontextmanager
async def redrawn(progress: Progress | None, line: Callable[[], str]) -> AsyncIterator[None]:
    """Show ``line()`` on ``progress`` while the block runs, and once more, forced, when it ends."""
    if progress is None:
        yield
        return
    ticker = asyncio.create_task(_redraw(progress, line))
    try:
        yield
    finally:
        ticker.cancel()
        progress.show(line(), force=True)
        progress.finish()


async def _redraw(progress: Progress, line: Callable[[], str]) -> None:
    while True:
        progress.show(line())
        await asyncio.sleep(REDRAW_SECONDS)


def status_line(
    phase: str,
    *,
    elapsed: float,
    duration: float,
    calls: int,
    in_flight: int,
    retries: int,
    kills: Mapping[str, int],
) -> str:
    """The progress line: a bar during the storm, the phase after it; ``calls`` counts those in flight."""
    elapsed = min(elapsed, duration)
    killed = ", ".join(f"{part} {count}" for part, count in kills.items()) or "off"
    head = phase
    if phase == "storm":
        head = f"{_bar(elapsed / duration)} {elapsed:4.0f}/{duration:.0f} s"
    return f"{head} | calls {calls} (in flight {in_flight}) | retries {retries} | kills {killed}"


def _bar(done: float, width: int = 24) -> str:
    filled = round(max(0.0, min(1.0, done)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"
