"""Server-side storage of devices and feedback events behind :class:`FeedbackStorage`.

:class:`SqliteFeedbackStorage` is the default (one SQLite file, WAL). A PostgreSQL backend
implements the same protocol: ``insert_events`` must be idempotent on ``event_id`` (``INSERT ...
ON CONFLICT (event_id) DO NOTHING``) and commit all of a batch or none of it.

Tables (``PRAGMA user_version`` 1):

- ``devices``: ``device_id`` (primary key), ``token_sha256`` (unique; the token itself is never
  stored), ``revoked`` (0/1), ``created_at``, ``revoked_at`` (seconds since the epoch, UTC).
- ``events``: ``id`` (arrival order), ``event_id`` (UNIQUE: each event is stored once however
  often it is resent), ``device_id``, ``seq`` (the device's sequence number), ``user_id``,
  ``item_id``, ``event_type`` (name), ``ts`` (seconds since the epoch), ``context`` (JSON text or
  NULL), ``received_at``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pocketrec.server.auth import hash_token, new_token
from pocketrec.server.validation import EventRecord

SCHEMA_VERSION = 1

FETCH_ROWS = 2_000
"""Rows :meth:`SqliteFeedbackStorage.iter_events` fetches from SQLite at a time."""

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS devices (
        device_id TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        created_at REAL NOT NULL,
        revoked_at REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        device_id TEXT NOT NULL,
        seq INTEGER,
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        ts REAL NOT NULL,
        context TEXT,
        received_at REAL NOT NULL
    )
    """,
)


@dataclass(frozen=True)
class Device:
    """A registered device; times are seconds since the epoch (UTC)."""

    device_id: str
    revoked: bool
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class StoredEvent:
    """An event as the server stored it (``timestamp``, the device's event time, and
    ``received_at``, when the server stored it, in seconds since the epoch, UTC; ``context``
    compact JSON text or ``None``)."""

    event_id: str
    device_id: str
    seq: int | None
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    context: str | None
    received_at: float

    @property
    def training_user(self) -> str:
        """The user as training reads it, ``<device_id>/<user_id>``: the same profile name on
        two devices is two people."""
        return f"{self.device_id}/{self.user_id}"


class FeedbackStorage(Protocol):
    """What the server needs from its database (all methods thread-safe)."""

    def add_device(self, device_id: str) -> str:
        """Register ``device_id`` (or re-issue its token, un-revoking it); returns the new
        token. Only its SHA-256 is stored."""
        ...

    def revoke_device(self, device_id: str) -> bool:
        """Revoke the device's token; False if the device is unknown."""
        ...

    def devices(self) -> list[Device]:
        """Every registered device, by id."""
        ...

    def authenticate(self, token: str) -> str | None:
        """The id of the active device owning ``token``; ``None`` if unknown or revoked."""
        ...

    def insert_events(self, device_id: str, events: Sequence[EventRecord]) -> int:
        """Store the batch in one transaction, skipping event ids already stored; returns how
        many were new."""
        ...

    def iter_events(self) -> Iterator[StoredEvent]:
        """Every stored event in arrival order, streamed: memory stays bounded however many
        are stored, and the events are one consistent snapshot (those stored while the
        iteration runs may or may not be included, never half a batch)."""
        ...

    def count_events(self) -> int:
        """How many events are stored."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


class SqliteFeedbackStorage:
    """:class:`FeedbackStorage` in one SQLite file (WAL, ``synchronous=FULL``).

    One connection guarded by a lock: requests are served from a thread pool and SQLite allows
    one writer at a time anyway.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        """Open (creating) the database at ``path``; ``busy_timeout`` in seconds."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        with self._transaction():
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path}: server schema version {version} is newer than this build's "
                    f"{SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def add_device(self, device_id: str) -> str:
        """See :meth:`FeedbackStorage.add_device`."""
        if not isinstance(device_id, str) or not device_id.strip() or len(device_id) > 200:
            raise ValueError(f"device id must be a non-empty str of <= 200 chars: {device_id!r}")
        token = new_token()
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT INTO devices (device_id, token_sha256, revoked, created_at) "
                "VALUES (?, ?, 0, ?) ON CONFLICT (device_id) DO UPDATE SET "
                "token_sha256 = excluded.token_sha256, revoked = 0, revoked_at = NULL",
                (device_id, hash_token(token), time.time()),
            )
        return token

    def revoke_device(self, device_id: str) -> bool:
        """See :meth:`FeedbackStorage.revoke_device`."""
        with self._lock, self._transaction():
            cursor = self._conn.execute(
                "UPDATE devices SET revoked = 1, revoked_at = ? WHERE device_id = ?",
                (time.time(), device_id),
            )
        return cursor.rowcount > 0

    def devices(self) -> list[Device]:
        """See :meth:`FeedbackStorage.devices`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT device_id, revoked, created_at, revoked_at FROM devices ORDER BY device_id"
            ).fetchall()
        return [Device(d, bool(r), c, ra) for d, r, c, ra in rows]

    def authenticate(self, token: str) -> str | None:
        """See :meth:`FeedbackStorage.authenticate`."""
        with self._lock:
            row = self._conn.execute(
                "SELECT device_id FROM devices WHERE token_sha256 = ? AND revoked = 0",
                (hash_token(token),),
            ).fetchone()
        return None if row is None else str(row[0])

    def insert_events(self, device_id: str, events: Sequence[EventRecord]) -> int:
        """See :meth:`FeedbackStorage.insert_events`."""
        now = time.time()
        rows = [
            (e.event_id, device_id, e.seq, e.user_id, e.item_id, e.event_type, e.timestamp,
             e.context, now)
            for e in events
        ]  # fmt: skip
        with self._lock, self._transaction():
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO events (event_id, device_id, seq, user_id, item_id, "
                "event_type, ts, context, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._conn.total_changes - before

    def iter_events(self) -> Iterator[StoredEvent]:
        """See :meth:`FeedbackStorage.iter_events`.

        Reads through a connection of its own in one read transaction (a WAL snapshot), fetching
        :data:`FETCH_ROWS` rows at a time, so neither intake nor the server's lock waits on a
        long export. The connection closes when the iterator is exhausted or closed.
        """
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("BEGIN")
            cursor = conn.execute(
                "SELECT event_id, device_id, seq, user_id, item_id, event_type, ts, context, "
                "received_at FROM events ORDER BY id"
            )
            while rows := cursor.fetchmany(FETCH_ROWS):
                for row in rows:
                    yield StoredEvent(*row)
        finally:
            conn.close()

    def count_events(self) -> int:
        """See :meth:`FeedbackStorage.count_events`."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
