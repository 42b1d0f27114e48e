"""Checking a manifest's Ed25519 signature against the public key the app was configured with.

Uses the ``cryptography`` package, imported on the first check (not by ``import
pocketrec.runtime``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pocketrec.core.errors import BundleRejectedError

PublicKey = bytes | str | os.PathLike[str]
"""32 raw bytes, 64 hex digits, or a file holding the hex (``KEY.pub`` from ``keygen``)."""


def public_key_bytes(key: PublicKey) -> bytes:
    """The 32 raw bytes of ``key``; ``ValueError`` when it is not an Ed25519 public key."""
    if isinstance(key, bytes):
        raw = key
    elif isinstance(key, str) and len(key.strip()) == 64:
        raw = bytes.fromhex(key.strip())
    elif isinstance(key, (str, os.PathLike)):
        raw = bytes.fromhex(Path(key).read_text(encoding="ascii").strip())
    else:
        raise ValueError(f"public_key must be bytes, hex or a path, got {type(key).__name__}")
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return raw


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise :class:`BundleRejectedError` unless ``signature`` is ``public_key``'s signature of
    ``data``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise BundleRejectedError(
            "the manifest's signature does not verify against the configured public key"
        ) from None
