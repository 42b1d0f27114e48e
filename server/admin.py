"""The operator's token for the admin routes (data requests): a random bearer token kept in a
file the operator controls (``pocketrec admin-token --out FILE`` writes one, mode 0600) and given
to ``pocketrec serve --admin-token-file FILE``. The server keeps only its SHA-256 in memory and
compares in constant time. Without it the admin routes answer 401."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from pocketrec.server.auth import hash_token, new_token

MIN_TOKEN_CHARS = 32


class AdminToken:
    """Checks presented tokens against the operator's (only its SHA-256 is held)."""

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
            raise ValueError(
                f"an admin token must be at least {MIN_TOKEN_CHARS} printable characters "
                "without spaces (pocketrec admin-token writes one)"
            )
        self._sha256 = hash_token(token)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AdminToken:
        """The token in the file ``path`` (surrounding whitespace ignored)."""
        return cls(Path(path).read_text(encoding="utf-8").strip())

    def matches(self, token: str | None) -> bool:
        """True when ``token`` is the operator's."""
        return token is not None and hmac.compare_digest(hash_token(token), self._sha256)


def write_new_token(path: str | os.PathLike[str]) -> None:
    """Write a fresh random admin token to ``path`` (created with mode 0600, never replaced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(new_token() + "\n")
