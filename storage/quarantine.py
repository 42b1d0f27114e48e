"""Events the sync server refused for good (table ``quarantine``).

A non-retryable 4xx (a schema or size violation) quarantines the events of the refused request:
they stay pending in the log (kept, counted, still under the outbox caps, erased with their user,
purged by an opt-out) but :meth:`Store.pending` passes over them so the rest of the outbox
proceeds, until :meth:`Store.release_quarantined` puts them back (e.g. after a server fix).
Triggers delete a quarantine row when its event is deleted or marked uploaded.

The functions here run inside a transaction opened by :class:`pocketrec.storage.store.Store`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from pocketrec.storage.events import Event

MAX_REASON_CHARS = 2000
LEGACY_SUFFIX = "-sync"
"""Before schema version 2 the quarantine lived in ``<store file>-sync`` (imported at open)."""


@dataclass(frozen=True)
class QuarantinedEvent:
    """A refused event: its ``seq`` and ``event_id``, the HTTP ``status``, the server's
    ``reason`` and ``quarantined_at`` (seconds since the epoch, UTC)."""

    seq: int
    event_id: str
    status: int
    reason: str
    quarantined_at: float


def add(
    db: sqlite_utils.Database, events: Sequence[Event], status: int, reason: str, now: float
) -> int:
    """Quarantine the still-pending ``events``; returns how many were not already."""
    text = reason[:MAX_REASON_CHARS]
    return _insert(db, [(e.seq, e.event_id, status, text, now) for e in events])


Row = tuple[int, str, int, str, float]
"""``(seq, event_id, status, reason, quarantined_at)``."""


def _insert(db: sqlite_utils.Database, rows: Sequence[Row]) -> int:
    """Insert the rows whose event is still pending; returns how many were new."""
    before = db.conn.total_changes
    db.conn.executemany(
        "INSERT OR IGNORE INTO quarantine (seq, event_id, status, reason, quarantined_at) "
        "SELECT seq, event_id, ?, ?, ? FROM events "
        "WHERE seq = ? AND event_id = ? AND uploaded_at IS NULL",
        [(status, reason, at, seq, event_id) for seq, event_id, status, reason, at in rows],
    )
    return db.conn.total_changes - before


def listed(db: sqlite_utils.Database) -> list[QuarantinedEvent]:
    """Every quarantined event, by seq."""
    rows = db.conn.execute(
        "SELECT seq, event_id, status, reason, quarantined_at FROM quarantine ORDER BY seq"
    )
    return [QuarantinedEvent(*row) for row in rows]


def release(db: sqlite_utils.Database, seqs: Iterable[int] | None) -> int:
    """Release all (``None``) or the given quarantined events; returns how many."""
    if seqs is None:
        return db.conn.execute("DELETE FROM quarantine").rowcount
    before = db.conn.total_changes
    db.conn.executemany("DELETE FROM quarantine WHERE seq = ?", [(seq,) for seq in seqs])
    return db.conn.total_changes - before


def count(db: sqlite_utils.Database) -> int:
    """How many events are quarantined."""
    return int(db.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])


def legacy_path(store_path: str) -> Path:
    """The side file an older build kept the quarantine in."""
    return Path(f"{store_path}{LEGACY_SUFFIX}")


def read_legacy(path: Path) -> list[Row]:
    """The rows of a legacy side file (``[]`` if it has no quarantine table)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT seq, event_id, status, reason, quarantined_at FROM quarantine"
        ).fetchall()
    except sqlite3.DatabaseError:
        return []
    finally:
        conn.close()


def import_legacy(db: sqlite_utils.Database, rows: Sequence[Row]) -> int:
    """Quarantine again the legacy rows whose event is still pending; returns how many."""
    return _insert(db, rows)
