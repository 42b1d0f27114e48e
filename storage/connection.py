"""The connections of one store file: one per thread, never carried across ``fork()``.

Every thread that uses a store gets its own SQLite connection (wrapped in a
``sqlite_utils.Database``), opened on first use with the store's pragmas; the connection of a
thread that has ended is closed when another thread opens one, or at ``close()``. Reads run in a
read transaction (a consistent snapshot; WAL lets them run while another thread writes). Writes run
in ``BEGIN IMMEDIATE`` transactions taken under a per-store lock, so the store's own threads queue
in Python instead of in SQLite's sleeping busy handler; other processes wait up to
``busy_timeout``. A write scope opened inside another one becomes a savepoint: it is atomic on its
own and the outer transaction commits everything at once.

After ``fork()`` the child must not touch its parent's connections (SQLite's locks are per
process). Every access compares ``os.getpid()`` with the pid that opened the connections; in a
child the inherited ones are set aside, never used and never closed, and fresh ones are opened.

Every ``sqlite3`` error leaving this module is a :class:`StorageError` naming the file (a full
disk or size limit: :class:`StorageFullError`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import sqlite_utils

from pocketrec.core.errors import StorageError, StorageFullError

Durability = Literal["full", "normal"]
DURABILITIES: tuple[Durability, ...] = ("full", "normal")

JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes the ``-wal`` file is truncated to after a checkpoint."""

_ABANDONED: list[Handle] = []
"""Connections inherited through ``fork()``: kept referenced so the child never closes them."""

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_FULL = 13


def is_busy(exc: sqlite3.Error) -> bool:
    """True for ``SQLITE_BUSY`` / ``SQLITE_LOCKED``: another connection holds a lock."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def storage_error(path: str, exc: sqlite3.Error) -> StorageError:
    """The :class:`StorageError` (or :class:`StorageFullError`) for a ``sqlite3`` error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return StorageFullError(
            f"{path}: no room left ({exc}); the write was rolled back, nothing earlier was lost"
        )
    return StorageError(f"{path}: {exc}")


class Handle:
    """One thread's connection and its transaction nesting."""

    __slots__ = ("broken", "db", "depth", "limit_generation", "writing")

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.depth = 0  # open scopes: 0 = no transaction
        self.writing = False  # the outermost scope is a write transaction
        self.broken = False  # an error rolled the whole transaction back under open scopes
        self.limit_generation = -1  # which size limit the connection's max_page_count reflects

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn


class Connections:
    """Per-thread connections to ``path`` with the given pragmas (see the module docstring)."""

    def __init__(
        self,
        path: str,
        *,
        durability: Durability,
        busy_timeout: float,
        max_size_bytes: int | None,
    ) -> None:
        self.path = path
        self.durability: Durability = durability
        self.busy_timeout = busy_timeout
        self._max_size_bytes = max_size_bytes
        self._limit_generation = 0
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._handles: dict[Handle, threading.Thread] = {}  # every open one, by owning thread
        self._write_lock = threading.Lock()
        self._registry_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def handle(self) -> Handle:
        """This thread's connection, opened on first use (and again in a forked child)."""
        if self._closed:
            raise StorageError(f"{self.path}: the store is closed")
        if os.getpid() != self._pid:
            _ABANDONED.extend(self._handles)
            self._reset()
        handle: Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._connect()
            self._local.handle = handle
            with self._registry_lock:
                self._close_orphans()
                self._handles[handle] = threading.current_thread()
        if handle.limit_generation != self._limit_generation and handle.depth == 0:
            self._apply_size_limit(handle)
        return handle

    def _connect(self) -> Handle:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # transactions are explicit (BEGIN / COMMIT below)
                check_same_thread=False,  # only close() touches another thread's connection
            )
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        try:
            full = self.durability == "full"
            conn.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            # macOS: fsync() does not reach the platter; F_FULLFSYNC does (ignored elsewhere).
            conn.execute(f"PRAGMA fullfsync = {int(full)}")
            conn.execute(f"PRAGMA checkpoint_fullfsync = {int(full)}")
            # Deleted events and erased users are overwritten with zeros, not left in free pages.
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            db = sqlite_utils.Database(conn, execute_plugins=False)
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(self.path, exc) from exc
        return Handle(db)

    def _apply_size_limit(self, handle: Handle) -> None:
        limit = self._max_size_bytes
        try:
            if limit is None:
                pages = 0xFFFFFFFE  # SQLite's largest page count: no limit of our own
            else:
                page_size = int(handle.conn.execute("PRAGMA page_size").fetchone()[0])
                pages = max(1, limit // page_size)
            handle.conn.execute(f"PRAGMA max_page_count = {pages}")
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        handle.limit_generation = self._limit_generation

    def set_max_size(self, max_size_bytes: int | None) -> None:
        """Change the size limit; each thread's connection applies it before its next use."""
        self._max_size_bytes = max_size_bytes
        self._limit_generation += 1

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A consistent snapshot for the block (or the enclosing transaction, if one is open)."""
        handle = self.handle()
        if handle.depth:
            self._check_not_broken(handle)
            try:
                yield handle.db
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from exc
            return
        try:
            handle.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        handle.depth = 1
        try:
            yield handle.db
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        finally:
            handle.depth = 0
            if handle.conn.in_transaction:
                _end(handle.conn, "COMMIT")  # a read transaction: nothing to write

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """An atomic write: a transaction, or a savepoint inside the thread's open transaction."""
        handle = self.handle()
        if handle.depth:
            with self._savepoint(handle):
                yield handle.db
            return
        with self._write_lock:
            try:
                handle.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from exc
            handle.depth, handle.writing, handle.broken = 1, True, False
            try:
                yield handle.db
                if handle.broken:
                    raise StorageError(
                        f"{self.path}: an error inside this transaction rolled it back; "
                        "nothing in it was written"
                    )
                handle.conn.execute("COMMIT")
            except BaseException as exc:
                if handle.conn.in_transaction:
                    _end(handle.conn, "ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise storage_error(self.path, exc) from exc
                raise
            finally:
                handle.depth, handle.writing = 0, False

    @contextmanager
    def _savepoint(self, handle: Handle) -> Iterator[None]:
        if not handle.writing:
            raise RuntimeError("a write cannot be nested inside a read-only scope")
        self._check_not_broken(handle)
        name = f"pocketrec_{handle.depth}"
        conn = handle.conn
        try:
            conn.execute(f"SAVEPOINT {name}")
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        handle.depth += 1
        try:
            yield
            conn.execute(f"RELEASE {name}")
        except BaseException as exc:
            if conn.in_transaction:
                _end(conn, f"ROLLBACK TO {name}", f"RELEASE {name}")
            if not conn.in_transaction:  # the whole transaction is gone (e.g. a full disk)
                handle.broken = True
            if isinstance(exc, sqlite3.Error):
                raise storage_error(self.path, exc) from exc
            raise
        finally:
            handle.depth -= 1

    def _check_not_broken(self, handle: Handle) -> None:
        if handle.broken:
            raise StorageError(
                f"{self.path}: an earlier error rolled this transaction back; leave the "
                "transaction block before writing again"
            )

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; False if readers or another process
        kept it from completing within ``busy_timeout`` (the data is safe either way)."""
        handle = self.handle()
        if handle.depth:
            return False
        try:
            busy, _, _ = handle.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False
            raise storage_error(self.path, exc) from exc
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        return not busy

    def close(self) -> None:
        """Close every thread's connection (in a forked child: abandon the inherited ones)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            _ABANDONED.extend(self._handles)
            return
        with self._registry_lock:
            handles = list(self._handles)
            self._handles = {}
        self._local = threading.local()
        for handle in handles:
            handle.conn.close()

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended (no one else can be using them)."""
        for handle, thread in list(self._handles.items()):
            if not thread.is_alive():
                del self._handles[handle]
                handle.conn.close()


def _end(conn: sqlite3.Connection, *statements: str) -> None:
    """Run transaction-ending statements; if one fails, roll everything back (never raises)."""
    try:
        for statement in statements:
            conn.execute(statement)
    except sqlite3.Error:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # unusable: its next use reports it
                conn.execute("ROLLBACK")
