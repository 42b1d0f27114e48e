"""The embedded default :class:`~pocketrec.server.storage.FeedbackStorage`: one SQLite file (WAL,
``synchronous=FULL``).

Identified by ``PRAGMA application_id`` :data:`APPLICATION_ID` ("pkrs"; version-1 files carry 0)
and versioned by ``PRAGMA user_version``, migrated by ``pocketrec.server.migrations`` (each step in
one ``BEGIN IMMEDIATE`` transaction with the ``user_version`` bump; an older pocketrec reading
``user_version`` refuses a newer file by itself). A file that is neither empty nor a server
database (a device store, say) is refused unchanged.

Version 1 (the first release):

- ``devices``: ``device_id`` (primary key), ``token_sha256`` (unique; the token itself is never
  stored), ``revoked`` (0/1), ``created_at``, ``revoked_at`` (seconds since the epoch, UTC).
- ``events``: ``id`` (arrival order), ``event_id`` (UNIQUE: each event is stored once however
  often it is resent), ``device_id``, ``seq`` (the device's sequence number), ``user_id``,
  ``item_id``, ``event_type`` (name), ``ts`` (seconds since the epoch), ``context`` (JSON text or
  NULL), ``received_at`` (seconds since the epoch).

Version 2: ``bundles`` (``model_version`` primary key, ``manifest_sha256`` hex, ``signature``
raw 64 bytes, ``published_at``); indexes ``events_device_user`` (data requests) and
``events_received`` (retention); ``application_id``.

Writes go through a :class:`~pocketrec.server.group_commit.GroupCommitter`: one committer thread
owns the write connection and commits every batch queued while the previous commit was being
fsynced in one transaction, each batch in its own savepoint (a failing batch is rolled back alone
and only its caller gets the error); a caller returns only once its batch is durable. No lock is
held across an fsync. Short reads (authentication, bundles, counts) use a small pool of read-only
connections, so they never wait behind a commit (WAL: readers see the last commit);
``iter_events``/``export_events`` stream from a read-only connection of their own, in one read
transaction (a snapshot; writers go on meanwhile).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pocketrec.core.errors import StorageError
from pocketrec.server.auth import hash_token, new_token
from pocketrec.server.group_commit import GroupCommitter
from pocketrec.server.metrics import server_metrics
from pocketrec.server.migrations import Step, check_supported, migrate
from pocketrec.server.storage import (
    BundleRecord,
    Device,
    Retention,
    StoredEvent,
    check_device_id,
)
from pocketrec.server.validation import EventRecord
from pocketrec.storage.connection import storage_error
from pocketrec.storage.schema import enable_wal

APPLICATION_ID = 0x706B7273
"""``PRAGMA application_id`` of a server database: the ASCII bytes "pkrs"."""

STEPS: tuple[Step, ...] = (
    Step(
        "devices and events",
        (
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
        ),
    ),
    Step(
        "bundles' metadata, indexes for data requests and retention, application id",
        (
            """
            CREATE TABLE bundles (
                model_version INTEGER PRIMARY KEY,
                manifest_sha256 TEXT NOT NULL CHECK (length(manifest_sha256) = 64),
                signature BLOB NOT NULL,
                published_at REAL NOT NULL
            )
            """,
            "CREATE INDEX events_device_user ON events (device_id, user_id)",
            "CREATE INDEX events_received ON events (received_at)",
            f"PRAGMA application_id = {APPLICATION_ID}",
        ),
    ),
)
SCHEMA_VERSION = len(STEPS)

_EVENT_COLUMNS = "event_id, device_id, seq, user_id, item_id, event_type, ts, context, received_at"
_STREAM_ROWS = 1000
"""Rows fetched per step while streaming events."""
_IDLE_READERS = 8
"""Read-only connections kept open for short reads (more are opened under load, then closed)."""


class SqliteFeedbackStorage:
    """:class:`~pocketrec.server.storage.FeedbackStorage` in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        steps: Sequence[Step] = STEPS,
    ) -> None:
        """Open (creating and migrating) the database at ``path``; ``busy_timeout`` in seconds;
        ``steps``: the schema's migrations (tests pass more to stand for a newer build). Raises
        ``SchemaTooNewError`` for a file of a newer pocketrec and ``StorageError`` for a file
        that is not a server database; neither is changed."""
        self.path = Path(path)
        self.where = str(self.path)
        self.busy_timeout = busy_timeout
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise storage_error(self.where, exc) from exc
        try:
            migration = _Migration(conn, self.where)
            with self._errors():
                found = migration.current_version()  # refuse a foreign file before WAL
                check_supported(self.where, found, len(steps))  # and a newer one
                enable_wal(conn, self.where, busy_timeout)
                conn.execute("PRAGMA synchronous = FULL")
                migrate(migration, steps)
        except BaseException:
            conn.close()
            raise
        self._writer = GroupCommitter(
            conn, self.where, busy_timeout=busy_timeout,
            on_group=server_metrics().commit_batches.observe,
        )  # fmt: skip

    # ------------------------------------------------------------------ devices

    def add_device(self, device_id: str) -> str:
        """See :meth:`FeedbackStorage.add_device`."""
        check_device_id(device_id)
        token = new_token()
        row = (device_id, hash_token(token), time.time())
        self._writer.submit(
            lambda conn: conn.execute(
                "INSERT INTO devices (device_id, token_sha256, revoked, created_at) "
                "VALUES (?, ?, 0, ?) ON CONFLICT (device_id) DO UPDATE SET "
                "token_sha256 = excluded.token_sha256, revoked = 0, revoked_at = NULL",
                row,
            )
        )
        return token

    def revoke_device(self, device_id: str) -> bool:
        """See :meth:`FeedbackStorage.revoke_device`."""
        params = (time.time(), device_id)
        return self._writer.submit(
            lambda conn: (
                conn.execute(
                    "UPDATE devices SET revoked = 1, revoked_at = ? WHERE device_id = ?", params
                ).rowcount
                > 0
            )
        )

    def devices(self) -> list[Device]:
        """See :meth:`FeedbackStorage.devices`."""
        rows = self._read(
            "SELECT device_id, revoked, created_at, revoked_at FROM devices ORDER BY device_id"
        )
        return [Device(d, bool(r), c, ra) for d, r, c, ra in rows]

    def authenticate(self, token: str) -> str | None:
        """See :meth:`FeedbackStorage.authenticate`."""
        rows = self._read(
            "SELECT device_id FROM devices WHERE token_sha256 = ? AND revoked = 0",
            (hash_token(token),),
        )
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ events

    def insert_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> int:
        """See :meth:`FeedbackStorage.insert_events`: the batch is committed together with the
        other batches queued meanwhile, in a savepoint of its own (module docstring)."""
        return self.submit_events(device_id, events, received_at=received_at).result()

    def submit_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> Future[int]:
        """:meth:`insert_events` without blocking: queue the batch for the next group commit;
        the future resolves to the count of new events once the batch is durable (or raises as
        :meth:`insert_events` does). The server awaits it without tying up a thread."""
        if not events:
            done: Future[int] = Future()
            done.set_result(0)
            return done
        now = time.time() if received_at is None else float(received_at)
        rows = [(device_id, now, *e) for e in events]  # e: the fields of EventRecord, in order

        def insert(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (device_id, received_at, event_id, seq, user_id, "
                "item_id, event_type, ts, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

        return self._writer.submit_nowait(insert, rows=len(rows))

    def iter_events(self) -> Iterator[StoredEvent]:
        """See :meth:`FeedbackStorage.iter_events`."""
        return self._stream(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id", ())

    def export_events(self, device_id: str, user_id: str | None = None) -> Iterator[StoredEvent]:
        """See :meth:`FeedbackStorage.export_events`."""
        where, params = _owner(device_id, user_id)
        return self._stream(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id", params
        )

    def count_events(self) -> int:
        """See :meth:`FeedbackStorage.count_events`."""
        return int(self._read("SELECT count(*) FROM events")[0][0])

    def erase_events(self, device_id: str, user_id: str | None = None) -> int:
        """See :meth:`FeedbackStorage.erase_events`."""
        where, params = _owner(device_id, user_id)
        return self._writer.submit(
            lambda conn: conn.execute(f"DELETE FROM events WHERE {where}", params).rowcount
        )

    def drop_events_before(self, cutoff_seconds: float) -> Retention:
        """See :meth:`FeedbackStorage.drop_events_before` (one ``DELETE``)."""
        cutoff = float(cutoff_seconds)
        deleted = self._writer.submit(
            lambda conn: (
                conn.execute("DELETE FROM events WHERE received_at < ?", (cutoff,)).rowcount
            )
        )
        return Retention(events=deleted, partitions=0)

    # ------------------------------------------------------------------ bundles

    def record_bundle(self, bundle: BundleRecord) -> None:
        """See :meth:`FeedbackStorage.record_bundle`."""

        def record(conn: sqlite3.Connection) -> None:
            latest = conn.execute("SELECT max(model_version) FROM bundles").fetchone()[0]
            if latest is not None and bundle.model_version <= latest:
                raise ValueError(
                    f"model_version {bundle.model_version} is not newer than the latest "
                    f"published {latest}; model versions only go up"
                )
            conn.execute(
                "INSERT INTO bundles (model_version, manifest_sha256, signature, published_at) "
                "VALUES (?, ?, ?, ?)",
                (bundle.model_version, bundle.manifest_sha256, bundle.signature,
                 bundle.published_at),
            )  # fmt: skip

        self._writer.submit(record)

    def bundle(self, model_version: int) -> BundleRecord | None:
        """See :meth:`FeedbackStorage.bundle`."""
        rows = self._read(
            "SELECT model_version, manifest_sha256, signature, published_at FROM bundles "
            "WHERE model_version = ?",
            (model_version,),
        )
        return _bundle(rows[0]) if rows else None

    def latest_bundle(self) -> BundleRecord | None:
        """See :meth:`FeedbackStorage.latest_bundle`."""
        rows = self._read(
            "SELECT model_version, manifest_sha256, signature, published_at FROM bundles "
            "ORDER BY model_version DESC LIMIT 1"
        )
        return _bundle(rows[0]) if rows else None

    # ------------------------------------------------------------------ lifecycle

    @property
    def committer(self) -> GroupCommitter:
        """The write path (its ``groups`` and ``largest_group`` counters show the grouping)."""
        return self._writer

    def ping(self) -> None:
        """See :meth:`FeedbackStorage.ping` (reads the schema)."""
        self._read("SELECT count(*) FROM sqlite_master")

    def close(self) -> None:
        """Commit the writes queued, then close every connection (idempotent)."""
        self._writer.close()
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise storage_error(self.where, exc) from exc

    def _read_only(self) -> sqlite3.Connection:
        """A new read-only connection (autocommit: each statement reads the last commit)."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        with self._errors():
            return sqlite3.connect(uri, uri=True, timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)  # fmt: skip

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """All rows of one short query, on a pooled read-only connection (never waits for the
        committer: WAL readers see the last commit while the next one is being written)."""
        with self._readers_lock:
            if self._closed:
                raise StorageError(f"{self.where}: the storage is closed")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._read_only()
        try:
            with self._errors():
                rows = list(conn.execute(sql, params).fetchall())
        except BaseException:
            conn.close()
            raise
        with self._readers_lock:
            if self._closed or len(self._readers) >= _IDLE_READERS:
                conn.close()
            else:
                self._readers.append(conn)
        return rows

    def _stream(self, sql: str, params: Sequence[object]) -> Iterator[StoredEvent]:
        """Rows of ``sql`` as events, from a read-only connection of their own in one read
        transaction (opened on the first ``next()``, closed when the iterator ends or is
        closed)."""
        conn = self._read_only()
        try:
            with self._errors():
                conn.execute("BEGIN")
                cursor = conn.execute(sql, params)
                while rows := cursor.fetchmany(_STREAM_ROWS):
                    for row in rows:
                        yield StoredEvent(*row)
                conn.execute("COMMIT")
        finally:
            conn.close()


class _Migration:
    """``MigrationTarget`` on the storage's connection: ``PRAGMA user_version``, and
    ``BEGIN IMMEDIATE`` as the lock."""

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.conn = conn
        self.where = where

    def current_version(self) -> int:
        """See ``MigrationTarget.current_version``; refuses a file that is not ours."""
        application_id = int(self.conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {
            str(name)
            for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        legacy = {"devices", "events"} <= tables  # version 1 left application_id at 0
        empty = version == 0 and not tables
        if application_id != APPLICATION_ID and not (application_id == 0 and (legacy or empty)):
            raise StorageError(
                f"{self.where}: not a pocketrec server database (application_id "
                f"{application_id:#x}, user_version {version}, tables "
                f"{', '.join(sorted(tables)) or 'none'}); it was not changed"
            )
        return version

    @contextmanager
    def step_transaction(self) -> Iterator[int]:
        """See ``MigrationTarget.step_transaction``."""
        with _Transaction(self.conn, self.where):
            yield int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def execute(self, statement: str) -> None:
        """See ``MigrationTarget.execute``."""
        self.conn.execute(statement)

    def set_version(self, version: int, description: str) -> None:
        """See ``MigrationTarget.set_version`` (SQLite keeps only the number)."""
        del description
        self.conn.execute(f"PRAGMA user_version = {int(version)}")


def _owner(device_id: str, user_id: str | None) -> tuple[str, tuple[str, ...]]:
    """The ``WHERE`` clause (and its parameters) selecting a device's or a device user's rows."""
    if user_id is None:
        return "device_id = ?", (device_id,)
    return "device_id = ? AND user_id = ?", (device_id, user_id)


def _bundle(row: tuple[Any, ...]) -> BundleRecord:
    version, sha256, signature, published_at = row
    return BundleRecord(int(version), str(sha256), bytes(signature), float(published_at))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception); ``sqlite3`` errors
    become ``StorageError`` naming the file."""

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self._conn = conn
        self._where = where

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(self._where, exc) from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.Error as error:
            raise storage_error(self._where, error) from error
        if isinstance(exc, sqlite3.Error):
            raise storage_error(self._where, exc) from exc
