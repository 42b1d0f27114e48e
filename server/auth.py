"""Device tokens: random bearer tokens; the server keeps only their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

AUTH_CACHE_SECONDS = 5.0
"""How long a server process trusts a token it has checked (``pocketrec serve
--auth-cache-seconds``): a revoked token is refused at the latest this long after revocation."""
AUTH_CACHE_SIZE = 100_000
"""Tokens a server process remembers at most (the oldest are forgotten first)."""

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


class TokenCache:
    """The devices of tokens this process checked in the last ``seconds`` (positive answers only:
    an unknown or revoked token is looked up every time). Keys are the tokens' SHA-256, never
    the tokens. ``seconds == 0`` remembers nothing. Not thread-safe: the event loop's alone.

    A hit saves a database round trip and a thread hop on every authenticated request; the
    price is that revoking a token takes effect within ``seconds`` rather than at once.
    """

    def __init__(
        self,
        seconds: float = AUTH_CACHE_SECONDS,
        *,
        size: int = AUTH_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= seconds <= 3600:
            raise ValueError(f"auth cache seconds must be in [0, 3600], got {seconds}")
        if size < 1:
            raise ValueError(f"auth cache size must be >= 1, got {size}")
        self.seconds = seconds
        self._size = size
        self._clock = clock
        self._devices: dict[str, tuple[str, float]] = {}

    def get(self, token: str) -> str | None:
        """The device of ``token`` if it was checked less than ``seconds`` ago, else ``None``."""
        if not self.seconds:
            return None
        key = hash_token(token)
        found = self._devices.get(key)
        if found is None:
            return None
        if self._clock() >= found[1]:
            del self._devices[key]
            return None
        return found[0]

    def put(self, token: str, device: str) -> None:
        """Remember that ``token`` is ``device``'s (for ``seconds`` from now)."""
        if not self.seconds:
            return
        key = hash_token(token)
        self._devices.pop(key, None)
        while len(self._devices) >= self._size:  # dicts keep insertion order: oldest first
            del self._devices[next(iter(self._devices))]
        self._devices[key] = (device, self._clock() + self.seconds)
