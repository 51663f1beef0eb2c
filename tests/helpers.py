"""Small helpers the test layers share."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout the tests run from: where ``make`` runs and ``tests.integration`` modules import."""
