"""Restate's request identity: requests to the service signed by restate-server.

restate-server signs every request to the service with a private key, and the service refuses any
request not signed by the matching public key.

Without it, anyone who reaches the service port could call ``withdraw`` directly, bypassing the
ingress and its private handlers.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from payments.runtime import processes

PUBLIC_KEY_PREFIX: Final = "publickeyv1_"
_BASE58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class KeyFileError(RuntimeError):
    """The signing key on disk cannot be used; the message says why and what to do, in one line."""


def ensure_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key at ``path``, creating it (readable by its owner only) on first use."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        processes.write_whole(path, pem)
    return _load(path)


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        with path.open("rb") as key_file:
            mode = stat.S_IMODE(os.fstat(key_file.fileno()).st_mode)
            pem = key_file.read()
    except OSError as error:
        raise KeyFileError(f"cannot read the signing key {path}: {error.strerror}") from None
    # Refused, not fixed: whoever could read it may have a copy, and only its owner can judge that.
    if mode & 0o077:
        raise KeyFileError(
            f"the signing key {path} is open to other users (mode {mode:04o}): `chmod 600 {path}`"
            " if nobody else can have read it, or delete it and a new one is made"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path} is not an Ed25519 private key (an older version could leave it empty after a crash):"
            " delete it and a new one is made"
        )
    return key


def public_key(private_key: Ed25519PrivateKey) -> str:
    """The public key in the form ``restate.app(identity_keys=[...])`` takes."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + _base58(raw)


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(_BASE58_ALPHABET[remainder])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))
