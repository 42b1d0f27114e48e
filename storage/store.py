"""`Store`: the device's durable SQLite store (one file) and the only entry point to it.

Units everywhere: timestamps are float seconds since the epoch (UTC), sizes are bytes.

Thread safety: every method may be called from any thread at the same time; each thread uses its
own connection (see ``pocketrec.storage.connection``), reads do not wait for writes (WAL) and
writes from the store's threads are serialized. The exceptions are :meth:`Store.close` (call it
once the other threads are done) and :meth:`Store.transaction` (a block on one thread; the other
threads' writes wait until it ends). A forked child may keep using the same ``Store`` object: it
opens its own connections and never touches its parent's.

Errors: bad arguments raise ``ValueError`` naming the problem before anything is written; a file
that cannot be used raises :class:`StorageError` (full disk or size limit:
:class:`StorageFullError`; a newer schema: :class:`SchemaTooNewError`). A failed call changes
nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from pocketrec.core.wire import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_EVENTS, MAX_EVENT_BYTES
from pocketrec.storage import bundles, catalog, events, privacy, quarantine, schema, state
from pocketrec.storage import validation as check
from pocketrec.storage.bundles import BundleRecord
from pocketrec.storage.catalog import CatalogItem, CatalogUpdate
from pocketrec.storage.connection import DURABILITIES, Connections, Durability
from pocketrec.storage.events import Batch, Caps, Event, NewEvent, OutboxStats
from pocketrec.storage.privacy import Erasure
from pocketrec.storage.quarantine import QuarantinedEvent
from pocketrec.storage.state import SavedUserState

DEFAULT_MAX_PENDING_EVENTS = 100_000
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 30.0
MIN_SIZE_LIMIT = 64 * 1024
"""Smallest accepted ``max_size_bytes`` (the empty schema takes about 50 KiB)."""

_DAY = 86_400.0


class Store:
    """The event log / outbox, user state, catalog cache and installed bundles in one SQLite file.

    Open with :meth:`Store.open`; use as a context manager or call :meth:`close`.
    """

    def __init__(self, connections: Connections, *, caps: Caps, retention_days: float) -> None:
        """Internal: use :meth:`Store.open`."""
        self._conns = connections
        self._caps = caps
        self._retention = retention_days * _DAY

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_size_bytes: int | None = None,
        busy_timeout: float = 5.0,
    ) -> Store:
        """Open (creating or migrating) the store file at ``path``.

        - ``durability``: ``"full"`` (``synchronous=FULL``: an acknowledged write survives power
          loss; one fsync per transaction) or ``"normal"`` (``synchronous=NORMAL``: survives an
          app crash, the last transactions may be lost on power loss; no fsync per commit).
        - ``max_pending_events`` (>= 1) and ``max_pending_bytes`` (>= ``MAX_EVENT_BYTES``) cap the
          events not yet uploaded; logging past a cap drops the oldest pending events.
        - ``retention_days``: uploaded events older than this (by event timestamp) are deleted.
        - ``max_size_bytes``: a limit on the database file, >= 64 KiB (``None``: the disk is the
          limit); writes beyond it raise :class:`StorageFullError`; :meth:`set_max_size` changes
          it. The ``-wal`` file comes on top (about 4 MiB at most after each checkpoint).
        - ``busy_timeout``: seconds to wait for another process's write lock.

        The parent directory must exist. Raises :class:`SchemaTooNewError` for a file written by
        a newer pocketrec (left unchanged) and :class:`StorageError` for a file that is not a
        pocketrec store or cannot be opened. Thread-safe.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a str or path, got {check.describe(path)}")
        location = os.fspath(path)
        if not isinstance(location, str) or location in ("", ":memory:"):
            raise ValueError(f"path must name a file, got {location!r}")
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        caps = Caps(
            max_events=check.integer("max_pending_events", max_pending_events, minimum=1),
            max_bytes=check.integer(
                "max_pending_bytes", max_pending_bytes, minimum=MAX_EVENT_BYTES
            ),
        )
        retention = check.positive("retention_days", retention_days)
        size_limit = _size_limit(max_size_bytes)
        timeout = check.real("busy_timeout", busy_timeout)
        if timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {timeout}")
        connections = Connections(
            location, durability=durability, busy_timeout=timeout, max_size_bytes=size_limit
        )
        try:
            schema.prepare(connections)
            store = cls(connections, caps=caps, retention_days=retention)
            store._import_legacy_quarantine()
            store.apply_retention()
        except BaseException:
            connections.close()
            raise
        return store

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database file."""
        return Path(self._conns.path)

    @property
    def durability(self) -> Durability:
        """``"full"`` or ``"normal"`` (see :meth:`open`)."""
        return self._conns.durability

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (always :data:`SCHEMA_VERSION` once open)."""
        return schema.SCHEMA_VERSION

    @property
    def closed(self) -> bool:
        return self._conns.closed

    def close(self) -> None:
        """Close every thread's connection. Call it once no other thread uses the store;
        closing twice is a no-op. In a forked child, the parent's connections are left alone."""
        self._conns.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every write of this thread inside the block one atomic transaction.

        Each call inside still succeeds or fails as a whole (a failed one is undone, the block
        may continue); the block commits once at its end, or rolls back everything if an
        exception leaves it. Other threads' writes wait for the block; do not wait inside it
        for another thread that writes to this store.
        """
        with self._conns.write():
            yield

    def set_max_size(self, max_size_bytes: int | None) -> None:
        """Change the database size limit (``None``: no limit but the disk). Thread-safe."""
        self._conns.set_max_size(_size_limit(max_size_bytes))

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or the problems found. Thread-safe."""
        with self._conns.read() as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    # --- event log / outbox ------------------------------------------------------------------

    def append(
        self,
        user_id: str,
        item_id: str,
        event_type: str | int,
        *,
        timestamp: float | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Event | None:
        """Log one event durably; returns it (with its ``seq`` and ``event_id``) once committed.

        ``event_type`` is a name of ``pocketrec.core.events`` (``"click"``) or its code;
        ``timestamp`` defaults to now; ``context`` is an optional JSON object. Ids are non-empty
        str of at most 512 UTF-8 bytes; events above ``MAX_EVENT_BYTES`` (32 KiB) are rejected.
        Returns ``None`` (and stores nothing) after :meth:`opt_out`. Thread-safe.
        """
        event = NewEvent(user_id, item_id, event_type, timestamp, context)
        rows = [events.prepare(event, now=time.time())]
        with self._conns.write() as db:
            logged = events.insert(db, rows, self._caps)
        return logged[0] if logged else None

    def append_many(self, new_events: Iterable[NewEvent]) -> list[Event]:
        """Log several events in one transaction (all or none); returns them in ``seq`` order
        (consecutive numbers), or ``[]`` after :meth:`opt_out`. Every event is checked as in
        :meth:`append` before anything is written. Thread-safe."""
        rows = events.prepare_all(new_events, now=time.time())
        with self._conns.write() as db:
            return events.insert(db, rows, self._caps)

    def pending(
        self, *, max_events: int = DEFAULT_BATCH_EVENTS, max_bytes: int = DEFAULT_BATCH_BYTES
    ) -> Batch:
        """The next upload batch: the oldest pending events, at most ``max_events`` (>= 1) and
        ``max_bytes`` in total (>= ``MAX_EVENT_BYTES``, so any event fits). Empty when nothing is
        pending. Until :meth:`mark_uploaded` acknowledges them the same events are returned
        again (at-least-once; the server deduplicates on ``event_id``). Quarantined events
        (:meth:`quarantine`) are passed over: they stay pending but do not block the others.
        Thread-safe; one uploader at a time."""
        limit = check.integer("max_events", max_events, minimum=1)
        size = check.integer("max_bytes", max_bytes, minimum=MAX_EVENT_BYTES)
        with self._conns.read() as db:
            return events.read_pending(db, limit, size)

    def still_pending(self, batch: Batch) -> Batch:
        """The events of ``batch`` that may still be sent: still pending (not uploaded, not
        erased, dropped or purged) and logging on, in ``seq`` order. The uploader calls it
        before every send and every retry, so an :meth:`opt_out` or :meth:`erase_user` takes
        effect before the next request. Thread-safe."""
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a Batch from pending(), got {check.describe(batch)}")
        with self._conns.read() as db:
            return events.still_pending(db, batch.events)

    def quarantine(self, batch: Batch, *, status: int, reason: str) -> int:
        """Quarantine the still-pending events of ``batch`` (the server refused them with the
        HTTP ``status`` for ``reason``); returns how many were not already. Thread-safe."""
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a Batch from pending(), got {check.describe(batch)}")
        code = check.integer("status", status, minimum=100, maximum=599)
        if not isinstance(reason, str):
            raise ValueError(f"reason must be a str, got {check.describe(reason)}")
        with self._conns.write() as db:
            return quarantine.add(db, batch.events, code, reason, time.time())

    def quarantined(self) -> list[QuarantinedEvent]:
        """Every quarantined event, by ``seq``. Thread-safe."""
        with self._conns.read() as db:
            return quarantine.listed(db)

    def release_quarantined(self, seqs: Iterable[int] | None = None) -> int:
        """Put quarantined events (all, or those in ``seqs``) back in the upload queue; returns
        how many. Thread-safe."""
        chosen = None if seqs is None else [check.integer("seqs[]", seq) for seq in seqs]
        with self._conns.write() as db:
            return quarantine.release(db, chosen)

    def mark_uploaded(self, batch: Batch, *, now: float | None = None) -> int:
        """Record that the server acknowledged ``batch``; call it only after the ack. Returns
        how many of its events were still pending (dropped or erased ones are skipped), then
        applies retention. ``now`` (default: the clock) is the upload time. Thread-safe."""
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a Batch from pending(), got {check.describe(batch)}")
        moment = self._now(now)
        with self._conns.write() as db:
            marked = events.mark_uploaded(db, batch, moment)
            events.delete_expired(db, moment - self._retention)
        return marked

    def apply_retention(self, *, now: float | None = None) -> int:
        """Delete uploaded events whose timestamp is more than ``retention_days`` before ``now``
        (default: the clock); returns how many. Runs at open and after each upload too.
        Thread-safe."""
        moment = self._now(now)
        with self._conns.write() as db:
            return events.delete_expired(db, moment - self._retention)

    def stats(self) -> OutboxStats:
        """Pending events and bytes, the all-time drop counter, uploaded events still kept, and
        whether logging is on. Thread-safe."""
        with self._conns.read() as db:
            return events.stats(db)

    def recent_events(self, user_id: str, limit: int) -> list[Event]:
        """The last ``limit`` (>= 0) stored events of ``user_id``, pending and uploaded, in
        ``seq`` order (oldest first); fewer when fewer are stored (dropped, erased or expired
        events are gone). One indexed query. Thread-safe."""
        user = check.identifier("user_id", user_id)
        count = check.integer("limit", limit)
        if count == 0:
            return []
        with self._conns.read() as db:
            return events.recent_user_events(db, user, count)

    def dismissed_items(self, user_id: str) -> list[str]:
        """Item ids ``user_id`` dismissed (event ``dismiss``) with no later positive event on
        them, in the order of their last dismissal, from every stored event of the user (a reset
        keeps them; erased or expired events are gone). Thread-safe."""
        user = check.identifier("user_id", user_id)
        with self._conns.read() as db:
            return events.dismissed_items(db, user)

    # --- privacy -----------------------------------------------------------------------------

    def logging_enabled(self) -> bool:
        """False after :meth:`opt_out` (until :meth:`opt_in`). Thread-safe."""
        return self.stats().logging_enabled

    def opt_out(self) -> int:
        """Stop logging now and delete every event not yet uploaded (one transaction); returns
        how many were deleted. Later appends store nothing and return ``None``/``[]``; user
        state, the catalog and uploaded events are kept. Persists across restarts. Thread-safe."""
        with self._conns.write() as db:
            purged = privacy.opt_out(db, time.time())
        self._conns.checkpoint()
        return purged

    def opt_in(self) -> None:
        """Resume logging after :meth:`opt_out` (nothing purged comes back). Thread-safe."""
        with self._conns.write() as db:
            events.set_logging(db, enabled=True, now=time.time())

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything stored about ``user_id`` as JSON-serializable data: ``format``,
        ``format_version``, ``user_id``, ``exported_at``, ``events`` (every stored event, pending
        or uploaded, in ``seq`` order, with ``uploaded_at``) and ``state`` (or ``None``).
        Consistent snapshot. Thread-safe."""
        user = check.identifier("user_id", user_id)
        with self._conns.read() as db:
            return privacy.export(db, user, time.time())

    def erase_user(self, user_id: str) -> Erasure:
        """Delete every event (pending and uploaded) and the state of ``user_id`` in one
        transaction; deleted rows are zeroed in the file and the WAL is checkpointed (best
        effort: a long read elsewhere can delay that to a later checkpoint). Thread-safe."""
        user = check.identifier("user_id", user_id)
        with self._conns.write() as db:
            erased = privacy.erase(db, user)
        self._conns.checkpoint()
        return erased

    # --- user state --------------------------------------------------------------------------

    def save_state(
        self,
        user_id: str,
        state_vector: npt.NDArray[np.float32],
        *,
        model_version: int,
        event_count: int,
        user_vector: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Save the user's state (float32 ``[H]``), optionally the user vector (float32
        ``[D + 1]``), the model version they belong to and the event count, replacing the
        previous one. Arrays must be float32, 1-D and finite; they read back bit for bit.
        Thread-safe."""
        user = check.identifier("user_id", user_id)
        blob = state.vector("state_vector", state_vector)
        vector = None if user_vector is None else state.vector("user_vector", user_vector)
        version = check.integer("model_version", model_version)
        count = check.integer("event_count", event_count)
        with self._conns.write() as db:
            state.save(
                db, user, blob, vector, model_version=version, event_count=count, now=time.time()
            )

    def load_state(self, user_id: str) -> SavedUserState | None:
        """The user's saved state, or ``None``. Thread-safe."""
        user = check.identifier("user_id", user_id)
        with self._conns.read() as db:
            return state.load(db, user)

    def delete_state(self, user_id: str) -> bool:
        """Delete the user's state (e.g. after a model change); True if there was one.
        Thread-safe."""
        user = check.identifier("user_id", user_id)
        with self._conns.write() as db:
            return state.delete(db, user)

    # --- catalog cache -----------------------------------------------------------------------

    def update_catalog(
        self,
        items: Iterable[CatalogItem] = (),
        *,
        remove: Iterable[str] = (),
        replace: bool = False,
    ) -> CatalogUpdate:
        """Apply a catalog update in one transaction: insert or replace ``items`` and delete the
        ids in ``remove``; with ``replace=True`` the items are the whole catalog (every other
        item is deleted). Everything is checked first (duplicate ids, an id both updated and
        removed, sizes: title 4 KiB, metadata 32 KiB). Thread-safe."""
        update = catalog.prepare(items, remove, replace=replace, now=time.time())
        with self._conns.write() as db:
            return catalog.apply(db, update)

    def availability_mask(self, item_ids: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Boolean array in the order of ``item_ids`` (e.g. the bundle's ``items.json``): True
        where the item is cached and available, False otherwise (unknown ids too). One query.
        Pass ``~mask`` as the top-k ``exclude``. Thread-safe."""
        ids = catalog.item_ids(item_ids)
        with self._conns.read() as db:
            return catalog.availability_mask(db, ids)

    def set_available(self, item_ids: Iterable[str], available: bool) -> None:
        """Mark cached items available or not in one transaction, keeping their title and
        metadata. An uncached item marked unavailable is cached without title or metadata (so
        the mark persists); an uncached item marked available is left uncached. Thread-safe."""
        ids = catalog.item_ids(item_ids)
        checked = [check.identifier(f"item_ids[{i}]", v) for i, v in enumerate(ids)]
        if not isinstance(available, bool):
            raise ValueError(f"available must be a bool, got {check.describe(available)}")
        with self._conns.write() as db:
            catalog.set_availability(db, checked, available=available, now=time.time())

    def unavailable_items(self) -> list[str]:
        """Ids of the cached items marked unavailable, sorted. Thread-safe."""
        with self._conns.read() as db:
            return catalog.unavailable(db)

    def get_item(self, item_id: str) -> CatalogItem | None:
        """The cached item, or ``None``. Thread-safe."""
        item = check.identifier("item_id", item_id)
        with self._conns.read() as db:
            return catalog.get(db, item)

    def catalog_size(self, *, available_only: bool = False) -> int:
        """Number of cached items (only available ones with ``available_only``). Thread-safe."""
        with self._conns.read() as db:
            return catalog.count(db, available_only=bool(available_only))

    # --- bundles -----------------------------------------------------------------------------

    def add_bundle(
        self,
        model_version: int,
        path: str | os.PathLike[str],
        sha256: str,
        *,
        activate: bool = False,
    ) -> BundleRecord:
        """Record a proven, installed bundle (its directory and the SHA-256 of its manifest, 64
        hex digits) as good, optionally making it the active one in the same transaction.
        Adding the same version again with the same path and hash is a no-op; with a different
        one, or for a version recorded as failed, a ``ValueError``. Thread-safe."""
        version, location, digest = bundles.check_record(model_version, path, sha256)
        with self._conns.write() as db:
            existing = bundles.get(db, version)
            if existing is None:
                bundles.insert(db, version, location, digest, time.time())
            elif not existing.good:
                raise ValueError(f"model_version {version} failed before: {existing.failure}")
            elif (existing.path, existing.sha256) != (location, digest):
                raise ValueError(
                    f"model_version {version} is already installed from {existing.path!r} "
                    f"with sha256 {existing.sha256}"
                )
            if activate:
                bundles.activate(db, version)
            record = bundles.get(db, version)
        assert record is not None
        return record

    def mark_bundle_failed(
        self, model_version: int, path: str | os.PathLike[str], sha256: str, *, reason: str
    ) -> BundleRecord:
        """Record that ``model_version`` failed (its proof, or opening it later): it is
        deactivated if it was active, never activated again, and the sync client does not
        download that version again. ``reason`` is kept (2,000 characters at most); a version
        not yet recorded is added as failed. Thread-safe."""
        version, location, digest = bundles.check_record(model_version, path, sha256)
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"reason must be a non-empty str, got {check.describe(reason)}")
        with self._conns.write() as db:
            bundles.mark_failed(db, version, location, digest, reason, time.time())
            record = bundles.get(db, version)
        assert record is not None
        return record

    def activate_bundle(self, model_version: int | None) -> BundleRecord | None:
        """Make the installed, good ``model_version`` the only active bundle (an older one is
        allowed: a rollback); ``None`` deactivates every bundle (the app's shipped bundle is
        served). ``ValueError`` if it is not installed or failed. Returns the active record.
        Thread-safe."""
        version = None if model_version is None else check.integer("model_version", model_version)
        with self._conns.write() as db:
            if version is not None:
                record = bundles.get(db, version)
                if record is None:
                    raise ValueError(f"model_version {version} is not installed ({_versions(db)})")
                if not record.good:
                    raise ValueError(f"model_version {version} failed: {record.failure}")
            bundles.activate(db, version)
            return None if version is None else bundles.get(db, version)

    def active_bundle(self) -> BundleRecord | None:
        """The active bundle, or ``None`` (the app's shipped bundle is served). Thread-safe."""
        with self._conns.read() as db:
            return bundles.active(db)

    def installed_bundles(self) -> list[BundleRecord]:
        """Every recorded bundle, good and failed, by model version. Thread-safe."""
        with self._conns.read() as db:
            return bundles.all_bundles(db)

    def remove_bundle(self, model_version: int) -> bool:
        """Forget an installed bundle (its files are the caller's); True if it was installed.
        ``ValueError`` for the active bundle: activate another one first. Thread-safe."""
        version = check.integer("model_version", model_version)
        with self._conns.write() as db:
            record = bundles.get(db, version)
            if record is not None and record.active:
                raise ValueError(f"model_version {version} is the active bundle; activate another")
            bundles.delete(db, version)
        return record is not None

    # --- helpers -----------------------------------------------------------------------------

    def _import_legacy_quarantine(self) -> None:
        """Move an older build's ``<store>-sync`` quarantine file into the store, then delete it
        (idempotent: a crash in between imports the same rows again)."""
        legacy = quarantine.legacy_path(self._conns.path)
        if not legacy.exists():
            return
        rows = quarantine.read_legacy(legacy)
        with self._conns.write() as db:
            quarantine.import_legacy(db, rows)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{legacy}{suffix}").unlink(missing_ok=True)

    @staticmethod
    def _now(now: float | None) -> float:
        return time.time() if now is None else check.timestamp("now", now)

    def __repr__(self) -> str:
        state_text = "closed" if self.closed else self.durability
        return f"Store({str(self.path)!r}, {state_text})"


def _size_limit(value: int | None) -> int | None:
    return None if value is None else check.integer("max_size_bytes", value, minimum=MIN_SIZE_LIMIT)


def _versions(db: sqlite_utils.Database) -> str:
    installed = [str(record.model_version) for record in bundles.all_bundles(db)]
    return "installed: " + (", ".join(installed) if installed else "none")
