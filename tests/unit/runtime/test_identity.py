"""The signing key on disk: written whole and private, and refused in one line when it is not."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from payments.runtime.identity import KeyFileError, ensure_private_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_key_is_private_and_loads_again(tmp_path: Path) -> None:
    path = tmp_path / "identity" / "private.pem"

    key = ensure_private_key(path)

    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    assert ensure_private_key(path).private_bytes_raw() == key.private_bytes_raw()
    assert [p.name for p in path.parent.iterdir()] == ["private.pem"]


def test_a_crash_while_the_key_is_written_leaves_no_key_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "private.pem"

    def disk_full(descriptor: int, *_: Any) -> None:
        os.close(descriptor)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "fdopen", disk_full)
        with pytest.raises(OSError, match="No space"):
            ensure_private_key(path)

    assert not path.exists()
    assert isinstance(ensure_private_key(path), Ed25519PrivateKey)


def test_a_partial_key_left_by_a_crash_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    partial = tmp_path / ".private.pem.partial"
    partial.write_bytes(b"-----BEGIN PRIV")
    partial.chmod(0o644)

    ensure_private_key(path)

    assert mode(path) == 0o600
    assert not partial.exists()


@pytest.mark.parametrize(
    "content", [b"", b"-----BEGIN PRIVATE KEY-----\ngarbage\n"], ids=["empty", "damaged"]
)
def test_an_unusable_key_is_one_line_saying_what_to_do(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(KeyFileError) as refused:
        ensure_private_key(path)

    message = str(refused.value)
    assert "\n" not in message
    assert str(path) in message
    assert "delete it" in message


@pytest.mark.parametrize("open_mode", [0o644, 0o640, 0o602])
def test_a_key_open_to_other_users_is_refused_not_fixed(tmp_path: Path, open_mode: int) -> None:
    path = tmp_path / "private.pem"
    ensure_private_key(path)
    path.chmod(open_mode)

    with pytest.raises(KeyFileError, match=f"open to other users .*chmod 600 {path}") as refused:
        ensure_private_key(path)

    assert "\n" not in str(refused.value)
    assert mode(path) == open_mode
