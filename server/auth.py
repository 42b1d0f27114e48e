"""Device tokens: random bearer tokens; the server keeps only their SHA-256."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32
"""Random bytes per token (the printed token is their URL-safe base64, 43 characters)."""


def new_token() -> str:
    """A fresh random device token (shown once to the operator, never stored)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Hex SHA-256 of the token's UTF-8 bytes: what the server stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
