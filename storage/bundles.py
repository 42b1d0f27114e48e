"""Installed bundles (table ``bundles``): their versions, paths and hashes, the active one, and
the versions that failed.

A bundle is identified by its ``model_version`` (an integer that only goes up, from the bundle's
manifest). A ``good`` bundle was proven (opened and exercised) before it was recorded; a
``failed`` one failed its proof or later failed to open: it is never activated again, and the
sync client does not download that version again (``failure`` says why). At most one bundle is
active (none: the app's shipped bundle is served); switching is one transaction, so there is
always exactly the old or the new active bundle. Activating an older good version (a rollback)
is allowed. The store records bundles; it does not read or verify their files
(``pocketrec.core.bundle`` and ``pocketrec.runtime.bundle`` do).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from pocketrec.storage import validation as check

MAX_PATH_BYTES = 4096
"""Longest bundle path, in UTF-8 bytes."""

MAX_FAILURE_CHARS = 2000
"""Longest failure reason kept (longer ones are cut)."""

GOOD = "good"
FAILED = "failed"

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BundleRecord:
    """An installed bundle; ``installed_at`` is seconds since the epoch (UTC); ``status`` is
    ``"good"`` or ``"failed"`` (then ``failure`` says why and it is never active)."""

    model_version: int
    path: str
    sha256: str
    installed_at: float
    active: bool
    status: str = GOOD
    failure: str | None = None

    @property
    def good(self) -> bool:
        return self.status == GOOD


def check_record(model_version: object, path: object, sha256: object) -> tuple[int, str, str]:
    """Checked ``(model_version, path, sha256)``; the hash is returned in lower case."""
    version = check.integer("model_version", model_version)
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    text = check.text("path", path, max_bytes=MAX_PATH_BYTES)
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {check.describe(sha256)}")
    return version, text, sha256.lower()


def get(db: sqlite_utils.Database, model_version: int) -> BundleRecord | None:
    """The bundle of ``model_version``, or ``None``."""
    return _one(db, "model_version = ?", (model_version,))


def active(db: sqlite_utils.Database) -> BundleRecord | None:
    """The active bundle, or ``None``."""
    return _one(db, "active = 1", ())


def _one(db: sqlite_utils.Database, where: str, params: tuple[Any, ...]) -> BundleRecord | None:
    rows = _select(db, where, params)
    return rows[0] if rows else None


def all_bundles(db: sqlite_utils.Database) -> list[BundleRecord]:
    """Every installed bundle, by model version."""
    return _select(db, "1", ())


def _select(db: sqlite_utils.Database, where: str, params: tuple[Any, ...]) -> list[BundleRecord]:
    rows = db.conn.execute(
        "SELECT model_version, path, sha256, installed_at, active, status, failure FROM bundles "
        f"WHERE {where} ORDER BY model_version",
        params,
    )
    return [BundleRecord(v, p, h, t, bool(a), st, f) for v, p, h, t, a, st, f in rows]


def insert(
    db: sqlite_utils.Database, model_version: int, path: str, sha256: str, now: float
) -> None:
    """Record a new, inactive bundle."""
    db.conn.execute(
        "INSERT INTO bundles (model_version, path, sha256, installed_at, active) "
        "VALUES (?, ?, ?, ?, 0)",
        (model_version, path, sha256, now),
    )


def activate(db: sqlite_utils.Database, model_version: int | None) -> None:
    """Make ``model_version`` (installed and good) the only active bundle; ``None``: none is
    active (the app's shipped bundle is served)."""
    db.conn.execute(
        "UPDATE bundles SET active = 0 WHERE active = 1 AND model_version IS NOT ?",
        (model_version,),
    )
    if model_version is not None:
        db.conn.execute("UPDATE bundles SET active = 1 WHERE model_version = ?", (model_version,))


def mark_failed(
    db: sqlite_utils.Database, model_version: int, path: str, sha256: str, reason: str, now: float
) -> None:
    """Record ``model_version`` as failed (inserted if unknown, deactivated if active)."""
    db.conn.execute(
        "INSERT INTO bundles (model_version, path, sha256, installed_at, active, status, failure) "
        "VALUES (?, ?, ?, ?, 0, 'failed', ?) ON CONFLICT (model_version) DO UPDATE SET "
        "active = 0, status = 'failed', failure = excluded.failure",
        (model_version, path, sha256, now, reason[:MAX_FAILURE_CHARS]),
    )


def delete(db: sqlite_utils.Database, model_version: int) -> None:
    """Forget an installed bundle."""
    db.conn.execute("DELETE FROM bundles WHERE model_version = ?", (model_version,))
