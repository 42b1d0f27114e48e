"""What the sync server needs from its database: the :class:`FeedbackStorage` protocol, the rows
it returns, and :func:`open_storage`, which picks the backend from the ``--db`` value.

Backends: :class:`~pocketrec.server.storage_sqlite.SqliteFeedbackStorage` (one SQLite file, the
embedded default) and :class:`~pocketrec.server.storage_postgres.PostgresFeedbackStorage`
(``postgresql://…``; psycopg 3, extra ``postgres``). Both keep devices (only the SHA-256 of each
token), feedback events and published bundles' metadata, with versioned schema migrations
(``pocketrec.server.migrations``).

Exactly-once intake, the same in both backends: ``insert_events`` stores a batch in one
transaction (all of it or none) and each ``event_id`` at most once while its stored copy is kept.
Retention (:meth:`FeedbackStorage.drop_events_before`) and erasure forget the ids together with the
events, so a resend arriving after its first copy was dropped or erased is stored again, as
received at the resend (a device resends only events it never got a 2xx for).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pocketrec.core import wire
from pocketrec.core.errors import StorageError
from pocketrec.server.validation import EventRecord

MAX_DEVICE_ID_CHARS = 200
"""Longest device id ``add_device`` accepts."""


class StorageUnavailableError(StorageError):
    """The server's database could not be reached or did not answer in time (the message says
    why); nothing was stored. Retrying later is safe: intake is idempotent."""


@dataclass(frozen=True)
class Device:
    """A registered device; times are seconds since the epoch (UTC)."""

    device_id: str
    revoked: bool
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class StoredEvent:
    """An event as the server stored it (``timestamp``: the event's time; ``received_at``: when
    the server stored it; both seconds since the epoch, UTC)."""

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


@dataclass(frozen=True)
class BundleRecord:
    """A published bundle's metadata (its files live in the bundles folder).

    ``manifest_sha256``: hex SHA-256 of ``manifest.json``'s exact bytes; ``signature``: the raw
    64-byte Ed25519 signature of those bytes; ``published_at``: seconds since the epoch (UTC).
    """

    model_version: int
    manifest_sha256: str
    signature: bytes
    published_at: float


@dataclass(frozen=True)
class Retention:
    """What :meth:`FeedbackStorage.drop_events_before` removed: ``events`` rows in all, of which
    the ones in ``partitions`` whole partitions dropped (PostgreSQL; always 0 with SQLite)."""

    events: int
    partitions: int


class FeedbackStorage(Protocol):
    """What the server needs from its database. Every method is thread-safe; a database that
    cannot be reached raises :class:`StorageUnavailableError`."""

    def add_device(self, device_id: str) -> str:
        """Register ``device_id`` (or re-issue its token, un-revoking it); returns the new
        token. Only its SHA-256 is stored. ``ValueError`` for an empty or over-long id."""
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

    def insert_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> int:
        """Store the batch in one transaction, skipping event ids already stored (and repeats
        within the batch: the first copy counts); returns how many were new. ``received_at``:
        seconds since the epoch to record as the arrival time (imports, tests); default the
        database's clock."""
        ...

    def iter_events(self) -> Iterator[StoredEvent]:
        """Every stored event in arrival order, streamed from one consistent snapshot (never all
        rows in memory). Close the iterator (or exhaust it) to release its connection."""
        ...

    def export_events(self, device_id: str, user_id: str | None = None) -> Iterator[StoredEvent]:
        """The events of one device (or of one of its users) in arrival order, streamed like
        :meth:`iter_events` (a data request)."""
        ...

    def count_events(self) -> int:
        """How many events are stored."""
        ...

    def erase_events(self, device_id: str, user_id: str | None = None) -> int:
        """Delete the events of one device (or of one of its users) in one transaction; returns
        how many were deleted (a data request)."""
        ...

    def drop_events_before(self, cutoff_seconds: float) -> Retention:
        """Retention: delete every event received before ``cutoff_seconds`` (since the epoch)."""
        ...

    def record_bundle(self, bundle: BundleRecord) -> None:
        """Record a published bundle; ``ValueError`` unless its version is newer than every
        recorded one (versions only go up)."""
        ...

    def bundle(self, model_version: int) -> BundleRecord | None:
        """The recorded bundle ``model_version``, or ``None``."""
        ...

    def latest_bundle(self) -> BundleRecord | None:
        """The recorded bundle with the highest version, or ``None``."""
        ...

    def ping(self) -> None:
        """Readiness: return if the database answers a query, else raise
        :class:`StorageUnavailableError`."""
        ...

    def close(self) -> None:
        """Release the database (idempotent)."""
        ...


@runtime_checkable
class SubmitsEvents(Protocol):
    """A storage that can queue a batch without blocking (both group commits): the server
    awaits the future instead of tying up a thread for :meth:`FeedbackStorage.insert_events`."""

    def submit_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> Future[int]:
        """Queue ``insert_events(device_id, events)``; the future gets its result (or error)."""
        ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str | os.PathLike[str]) -> bool:
    """True when ``db`` is a PostgreSQL connection URI rather than a SQLite path."""
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def open_storage(db: str | os.PathLike[str]) -> FeedbackStorage:
    """Open (creating and migrating) the server database named by ``db``: a
    ``postgresql://…`` URI opens :class:`PostgresFeedbackStorage` (extra ``postgres``), anything
    else is the path of a SQLite file."""
    if is_postgres(db):
        try:
            from pocketrec.server.storage_postgres import PostgresFeedbackStorage
        except ImportError as exc:
            raise StorageError(
                f"a postgresql:// database needs the `postgres` extra (pip install "
                f"'pocketrec[postgres]'): {exc}"
            ) from exc
        return PostgresFeedbackStorage(str(db))
    from pocketrec.server.storage_sqlite import SqliteFeedbackStorage

    return SqliteFeedbackStorage(db)


def check_device_id(device_id: object) -> str:
    """``device_id`` if it is an id as ``pocketrec.core.wire.id_problem`` accepts it, not blank,
    and at most :data:`MAX_DEVICE_ID_CHARS` characters; else ``ValueError`` naming the problem."""
    problem = wire.id_problem(device_id)
    if problem is None and isinstance(device_id, str):
        if not device_id.strip():
            problem = "must not be blank"
        elif len(device_id) > MAX_DEVICE_ID_CHARS:
            problem = f"is over {MAX_DEVICE_ID_CHARS} characters"
    if problem is not None:
        raise ValueError(f"device id {device_id!r} {problem}")
    assert isinstance(device_id, str)
    return device_id
