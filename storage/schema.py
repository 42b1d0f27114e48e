"""The store's schema, its version and the forward migrations.

The file is identified by ``PRAGMA application_id`` (:data:`APPLICATION_ID`, "pkrc") and versioned
by ``PRAGMA user_version``. ``MIGRATIONS[v]`` upgrades a file from version ``v`` to ``v + 1``
(``MIGRATIONS[0]`` creates the first schema in an empty file); :data:`SCHEMA_VERSION` is their
number. Opening runs the missing steps in one ``BEGIN IMMEDIATE`` transaction that also bumps
``user_version``, so a crash mid-migration leaves the old version intact. A file with a higher
version than this build knows is refused with :class:`SchemaTooNewError` before anything is
written (not even the switch to WAL).

To change the schema: append a function to ``MIGRATIONS`` (never edit a released step; use
``sqlite_utils`` ``Table.add_column`` / ``Table.transform`` for table changes), then add a test
that opens the committed ``tests/fixtures/storage_v1.sqlite`` and checks the migrated data.

Version 1:

- ``events``: the event log and upload outbox. ``seq`` (AUTOINCREMENT, so a sequence number is
  never reused even after the newest events are deleted), ``event_id`` (UUID text, unique),
  ``user_id``, ``item_id``, ``event_type`` (code of ``pocketrec.core.events``), ``ts`` (seconds
  since the epoch, UTC), ``context`` (JSON text or NULL), ``size`` (bytes counted against the
  caps), ``uploaded_at`` (NULL while pending). Triggers keep the pending totals in ``outbox`` and
  forbid changing an event other than marking it uploaded.
- ``outbox``: one row: ``pending_events``, ``pending_bytes``, ``dropped_events`` (all-time count of
  pending events dropped by the caps), ``logging_enabled`` (0 after ``opt_out``),
  ``opted_out_at``.
- ``user_state``: ``user_id``, ``model_version``, ``dim``, ``state`` and ``user_vector``
  (little-endian float32 blobs), ``event_count``, ``updated_at``.
- ``catalog``: ``item_id``, ``title``, ``metadata`` (JSON text), ``available`` (0/1),
  ``updated_at``.
- ``bundles``: ``model_version``, ``path``, ``sha256``, ``installed_at``, ``active`` (at most one
  row is 1, enforced by a unique partial index).

Version 2:

- ``bundles`` gains ``status`` (``good``: proven and installed; ``failed``: a version that failed
  its proof or later failed to open, never activated or retried) and ``failure`` (why).
- ``quarantine``: events the sync server refused for good (``seq``, ``event_id``, HTTP
  ``status``, ``reason``, ``quarantined_at``); they stay pending but are not uploaded until
  released. Triggers drop a row when its event is deleted (erase, opt-out, caps, retention) or
  marked uploaded.
- ``events.size`` is recounted with ``pocketrec.core.wire.event_size``, the count the server uses.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

import sqlite_utils

from pocketrec.core.errors import SchemaTooNewError, StorageError
from pocketrec.core.wire import event_size
from pocketrec.storage.connection import Connections, is_busy, storage_error

APPLICATION_ID = 0x706B7263
"""``PRAGMA application_id`` of a pocketrec store: the ASCII bytes "pkrc"."""

Migration = Callable[[sqlite_utils.Database], None]

_IMMUTABLE_EVENTS = """
    CREATE TRIGGER events_immutable
    BEFORE UPDATE OF seq, event_id, user_id, item_id, event_type, ts, context, size ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are immutable');
    END
"""

_V1 = (
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        event_type INTEGER NOT NULL CHECK (event_type >= 0),
        ts REAL NOT NULL,
        context TEXT,
        size INTEGER NOT NULL CHECK (size > 0),
        uploaded_at REAL
    )
    """,
    "CREATE INDEX events_pending ON events (seq) WHERE uploaded_at IS NULL",
    "CREATE INDEX events_uploaded_ts ON events (ts) WHERE uploaded_at IS NOT NULL",
    "CREATE INDEX events_user ON events (user_id)",
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pending_events INTEGER NOT NULL DEFAULT 0,
        pending_bytes INTEGER NOT NULL DEFAULT 0,
        dropped_events INTEGER NOT NULL DEFAULT 0,
        logging_enabled INTEGER NOT NULL DEFAULT 1 CHECK (logging_enabled IN (0, 1)),
        opted_out_at REAL
    )
    """,
    "INSERT INTO outbox (id) VALUES (1)",
    """
    CREATE TRIGGER events_count_insert AFTER INSERT ON events WHEN NEW.uploaded_at IS NULL
    BEGIN
        UPDATE outbox SET pending_events = pending_events + 1,
                          pending_bytes = pending_bytes + NEW.size WHERE id = 1;
    END
    """,
    """
    CREATE TRIGGER events_count_delete AFTER DELETE ON events WHEN OLD.uploaded_at IS NULL
    BEGIN
        UPDATE outbox SET pending_events = pending_events - 1,
                          pending_bytes = pending_bytes - OLD.size WHERE id = 1;
    END
    """,
    """
    CREATE TRIGGER events_count_uploaded AFTER UPDATE OF uploaded_at ON events
    WHEN OLD.uploaded_at IS NULL AND NEW.uploaded_at IS NOT NULL
    BEGIN
        UPDATE outbox SET pending_events = pending_events - 1,
                          pending_bytes = pending_bytes - OLD.size WHERE id = 1;
    END
    """,
    _IMMUTABLE_EVENTS,
    """
    CREATE TRIGGER events_upload_final BEFORE UPDATE OF uploaded_at ON events
    WHEN OLD.uploaded_at IS NOT NULL
    BEGIN
        SELECT RAISE(ABORT, 'an uploaded event cannot be changed');
    END
    """,
    """
    CREATE TABLE user_state (
        user_id TEXT PRIMARY KEY,
        model_version INTEGER NOT NULL,
        dim INTEGER NOT NULL CHECK (dim > 0),
        state BLOB NOT NULL CHECK (length(state) = 4 * dim),
        user_vector BLOB,
        event_count INTEGER NOT NULL CHECK (event_count >= 0),
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE catalog (
        item_id TEXT PRIMARY KEY,
        title TEXT,
        metadata TEXT,
        available INTEGER NOT NULL CHECK (available IN (0, 1)),
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE bundles (
        model_version INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        installed_at REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
    )
    """,
    "CREATE UNIQUE INDEX bundles_one_active ON bundles (active) WHERE active = 1",
)


def _create_v1(db: sqlite_utils.Database) -> None:
    for statement in _V1:
        db.execute(statement)


_V2 = (
    "ALTER TABLE bundles ADD COLUMN status TEXT NOT NULL DEFAULT 'good' "
    "CHECK (status IN ('good', 'failed'))",
    "ALTER TABLE bundles ADD COLUMN failure TEXT",
    """
    CREATE TABLE quarantine (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        quarantined_at REAL NOT NULL
    )
    """,
    """
    CREATE TRIGGER quarantine_follows_delete AFTER DELETE ON events
    BEGIN
        DELETE FROM quarantine WHERE seq = OLD.seq;
    END
    """,
    """
    CREATE TRIGGER quarantine_follows_upload AFTER UPDATE OF uploaded_at ON events
    WHEN NEW.uploaded_at IS NOT NULL
    BEGIN
        DELETE FROM quarantine WHERE seq = OLD.seq;
    END
    """,
)


def _bundle_status_quarantine_and_wire_sizes(db: sqlite_utils.Database) -> None:
    """Version 2: a bundle's ``status``/``failure``; the sync quarantine moves into the store
    (it was a ``<store>-sync`` side file, imported at open by ``Store.open``); event sizes are
    recounted with ``pocketrec.core.wire.event_size`` (the server's count)."""
    for statement in _V2:
        db.execute(statement)
    db.execute("DROP TRIGGER events_immutable")
    rows = db.execute("SELECT seq, user_id, item_id, context FROM events").fetchall()
    db.conn.executemany(
        "UPDATE events SET size = ? WHERE seq = ?",
        [(event_size(user, item, context), seq) for seq, user, item, context in rows],
    )
    db.execute(_IMMUTABLE_EVENTS)
    db.execute(
        "UPDATE outbox SET pending_bytes = (SELECT coalesce(sum(size), 0) FROM events "
        "WHERE uploaded_at IS NULL) WHERE id = 1"
    )


MIGRATIONS: tuple[Migration, ...] = (_create_v1, _bundle_status_quarantine_and_wire_sizes)
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this build writes (``PRAGMA user_version``)."""


def read_version(db: sqlite_utils.Database, path: str, supported: int) -> int:
    """The file's schema version; refuses foreign files and versions newer than ``supported``.

    0 means an empty file (no tables yet).
    """
    application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if application_id == APPLICATION_ID:
        if version > supported:
            raise SchemaTooNewError(path, version, supported)
        return version
    if application_id == 0 and version == 0 and not db.table_names():
        return 0
    raise StorageError(
        f"{path}: not a pocketrec store (application_id {application_id:#x}, user_version "
        f"{version}, tables {', '.join(db.table_names()) or 'none'}); it was not changed"
    )


def prepare(
    connections: Connections, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Check the file, switch it to WAL and migrate it; returns ``(found, now)`` versions."""
    path = connections.path
    supported = len(migrations)
    with connections.read() as db:
        read_version(db, path, supported)  # refuse before WAL or anything else touches the file
    _enable_wal(connections)
    with connections.write() as db:
        found = read_version(db, path, supported)  # again: another process may have migrated
        if found == 0:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for version in range(found, supported):
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
    return found, supported


def _enable_wal(connections: Connections) -> None:
    enable_wal(connections.handle().conn, connections.path, connections.busy_timeout)


def enable_wal(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Switch the file to WAL (persistent). The switch needs an exclusive lock and SQLite does not
    wait for it (no busy handler), so retry until ``busy_timeout`` seconds when processes race to
    create the same file. Raises ``StorageError`` naming ``path``."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            if mode.lower() != "wal":
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            break
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise storage_error(path, exc) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        except sqlite3.Error as exc:
            raise storage_error(path, exc) from exc
    if mode.lower() != "wal":
        raise StorageError(f"{path}: this file system does not support WAL mode (got {mode!r})")
