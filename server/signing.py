"""Ed25519 keys for signing bundle manifests (the ``cryptography`` package).

The private key is a PKCS#8 PEM file (mode 0600); the public key is shared with the devices as 64
hex digits (its 32 raw bytes), written next to the private key as ``KEY.pub``. The signature
covers the exact bytes of ``manifest.json``; the manifest lists every other file's length and
SHA-256, so it covers the whole bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_key(path: str | os.PathLike[str]) -> str:
    """Write a new private key to ``path`` (refusing to overwrite) and its public key to
    ``path.pub``; returns the public key as hex."""
    target = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = public_key_hex(key)
    Path(f"{target}.pub").write_text(public + "\n", encoding="ascii")
    return public


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a PEM private key written by :func:`generate_key`; ``ValueError`` otherwise."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """The public half of ``key`` as 64 hex digits (what devices are configured with)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data``."""
    return key.sign(data)
