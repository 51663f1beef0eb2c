"""Fixtures shared by every kind of test."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the service itself uses."""
    return "asyncio"


@pytest.fixture
def unique() -> str:
    """A prefix that keeps each test's payment ids and accounts apart from the others'."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session", autouse=True)
def _passable_base_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Let the PostgreSQL that a root test run starts as ``nobody`` through pytest's private temp dirs."""
    base = tmp_path_factory.getbasetemp()
    _let_others_pass(base.parent, base)


@pytest.fixture(autouse=True)
def _passable_tmp_path(request: pytest.FixtureRequest) -> None:
    """The same for a test's own ``tmp_path``, in which it may start a stack."""
    if "tmp_path" in request.fixturenames:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        # pytest closes its root again whenever another run starts.
        _let_others_pass(tmp_path.parent.parent, tmp_path.parent, tmp_path)


def _let_others_pass(*directories: Path) -> None:
    """Add o+x (pass, not list) to pytest's 0700 directories, when root: only root's runs need it."""
    if os.geteuid() == 0:
        for directory in directories:
            directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
