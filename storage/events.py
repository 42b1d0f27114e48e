"""The event log and upload outbox (table ``events``, totals in ``outbox``).

Every logged event gets the next sequence number (``seq``, strictly increasing, never reused) and
a random UUID ``event_id`` fixed at logging time: the idempotency key the server deduplicates on.
Ordering is by ``seq``, never by wall time. An event stays *pending* until the server has
acknowledged it (``mark_uploaded``); it is then kept for the retention period and deleted.

Sizes: an event counts ``pocketrec.core.wire.event_size`` bytes (the size the sync server counts
too: a fixed overhead plus the JSON of its ids and context); events above :data:`MAX_EVENT_BYTES`
are rejected. The pending events are capped
(count and bytes); logging past a cap deletes the oldest pending events and adds them to the
persistent ``dropped_events`` counter.

The functions here run inside a transaction opened by :class:`pocketrec.storage.store.Store`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from pocketrec.core.events import (
    EVENT_NAMES,
    NEGATIVE_EVENTS,
    EventType,
    event_code,
    event_name,
)
from pocketrec.core.wire import MAX_EVENT_BYTES, event_size
from pocketrec.storage import validation as check

_COLUMNS = "seq, event_id, user_id, item_id, event_type, ts, context, size, uploaded_at"
_POSITIVE = ", ".join(str(int(e)) for e in EventType if e not in NEGATIVE_EVENTS)


@dataclass(frozen=True)
class NewEvent:
    """An event to log (see :meth:`Store.append` for the meaning and checks of each field)."""

    user_id: str
    item_id: str
    event_type: str | int
    timestamp: float | None = None
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    """A logged event. ``timestamp`` and ``uploaded_at`` are seconds since the epoch (UTC);
    ``uploaded_at`` is ``None`` while the event is pending; ``size`` is in bytes."""

    seq: int
    event_id: str
    user_id: str
    item_id: str
    event_code: int
    timestamp: float
    context: dict[str, Any] | None
    size: int
    uploaded_at: float | None = None

    @property
    def event_type(self) -> str:
        """The event's name (``"click"``); ``"code N"`` for a code this build does not know."""
        code = self.event_code
        return EVENT_NAMES[code] if 0 <= code < len(EVENT_NAMES) else f"code {code}"

    def to_upload(self) -> dict[str, Any]:
        """The event as the uploader sends it (JSON-serializable)."""
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "context": self.context,
        }


@dataclass(frozen=True)
class Batch:
    """The next events to upload, oldest first (see :meth:`Store.pending`)."""

    events: tuple[Event, ...]

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    @property
    def size(self) -> int:
        """Total size of the batch's events, in bytes."""
        return sum(event.size for event in self.events)

    @property
    def first_seq(self) -> int | None:
        return self.events[0].seq if self.events else None

    @property
    def last_seq(self) -> int | None:
        return self.events[-1].seq if self.events else None


@dataclass(frozen=True)
class OutboxStats:
    """Pending totals (count, bytes), the all-time drop counter, uploaded events still kept,
    whether logging is on, and how many pending events are quarantined (part of
    ``pending_events``)."""

    pending_events: int
    pending_bytes: int
    dropped_events: int
    uploaded_events: int
    logging_enabled: bool
    quarantined_events: int = 0


@dataclass(frozen=True)
class Caps:
    """Limits on the pending events: count and total bytes."""

    max_events: int
    max_bytes: int


@dataclass(frozen=True)
class _Row:
    event_id: str
    user_id: str
    item_id: str
    code: int
    ts: float
    context: str | None
    size: int


def prepare(event: NewEvent, *, now: float, name: str = "") -> _Row:
    """Check one event and give it its id and size.

    ``ValueError`` messages name the field (``user_id``), prefixed by ``name`` (``events[3].``).
    """
    if not isinstance(event, NewEvent):
        raise ValueError(f"{name or 'event'} must be a NewEvent, got {check.describe(event)}")
    at = f"{name}." if name else ""
    user_id = check.identifier(f"{at}user_id", event.user_id)
    item_id = check.identifier(f"{at}item_id", event.item_id)
    code = _code(f"{at}event_type", event.event_type)
    ts = now if event.timestamp is None else check.timestamp(f"{at}timestamp", event.timestamp)
    context = check.json_object(f"{at}context", event.context, max_bytes=MAX_EVENT_BYTES)
    size = event_size(user_id, item_id, context)
    if size > MAX_EVENT_BYTES:
        raise ValueError(
            f"{name or 'the event'} is {size} bytes; events are limited to {MAX_EVENT_BYTES} bytes"
        )
    return _Row(str(uuid.uuid4()), user_id, item_id, code, ts, context, size)


def _code(name: str, value: object) -> int:
    if isinstance(value, str):
        return event_code(value)
    if isinstance(value, int) and not isinstance(value, bool):
        event_name(value)  # ValueError for a code outside the registry
        return int(value)
    raise ValueError(f"{name} must be an event name or code, got {check.describe(value)}")


def prepare_all(events: Iterable[NewEvent], *, now: float) -> list[_Row]:
    """:func:`prepare` every event (``events[i].field`` in messages) before anything is written."""
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Iterable):
        raise ValueError(f"events must be an iterable of NewEvent, got {check.describe(events)}")
    return [prepare(event, now=now, name=f"events[{i}]") for i, event in enumerate(events)]


def insert(db: sqlite_utils.Database, rows: Sequence[_Row], caps: Caps) -> list[Event]:
    """Append ``rows`` unless logging is off (then ``[]``), then drop the oldest over the caps."""
    conn = db.conn
    enabled, pending_events, pending_bytes = conn.execute(
        "SELECT logging_enabled, pending_events, pending_bytes FROM outbox WHERE id = 1"
    ).fetchone()
    if not enabled or not rows:
        return []
    logged = []
    for row in rows:
        cursor = conn.execute(
            "INSERT INTO events (event_id, user_id, item_id, event_type, ts, context, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.event_id, row.user_id, row.item_id, row.code, row.ts, row.context, row.size),
        )
        seq = cursor.lastrowid
        assert seq is not None
        logged.append(_event(row, seq))
    excess_events = pending_events + len(rows) - caps.max_events
    excess_bytes = pending_bytes + sum(row.size for row in rows) - caps.max_bytes
    if excess_events > 0 or excess_bytes > 0:
        _drop_oldest(conn, excess_events, excess_bytes)
    return logged


def _event(row: _Row, seq: int) -> Event:
    context = json.loads(row.context) if row.context is not None else None
    return Event(seq, row.event_id, row.user_id, row.item_id, row.code, row.ts, context, row.size)


def _drop_oldest(conn: sqlite3.Connection, excess_events: int, excess_bytes: int) -> None:
    cursor = conn.execute("SELECT seq, size FROM events WHERE uploaded_at IS NULL ORDER BY seq")
    dropped = freed = cutoff = 0
    for seq, size in cursor:
        dropped, freed, cutoff = dropped + 1, freed + size, seq
        if dropped >= excess_events and freed >= excess_bytes:
            break
    cursor.close()
    conn.execute("DELETE FROM events WHERE uploaded_at IS NULL AND seq <= ?", (cutoff,))
    conn.execute("UPDATE outbox SET dropped_events = dropped_events + ? WHERE id = 1", (dropped,))


def read_pending(db: sqlite_utils.Database, max_events: int, max_bytes: int) -> Batch:
    """The oldest pending, unquarantined events: at most ``max_events`` and ``max_bytes`` in
    total."""
    cursor = db.conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE uploaded_at IS NULL "
        "AND seq NOT IN (SELECT seq FROM quarantine) ORDER BY seq LIMIT ?",
        (max_events,),
    )
    events: list[Event] = []
    total = 0
    for row in cursor:
        event = _decode(row)
        if total + event.size > max_bytes:
            break
        events.append(event)
        total += event.size
    cursor.close()
    return Batch(tuple(events))


def still_pending(db: sqlite_utils.Database, events: Sequence[Event]) -> Batch:
    """Those of ``events`` that are still pending (same ``seq`` and ``event_id``, not uploaded,
    not purged), in ``seq`` order; none while logging is off (after an opt-out)."""
    enabled = db.conn.execute("SELECT logging_enabled FROM outbox WHERE id = 1").fetchone()[0]
    if not enabled or not events:
        return Batch(())
    rows = db.conn.execute(
        "SELECT seq, event_id FROM events WHERE uploaded_at IS NULL "
        "AND seq IN (SELECT value FROM json_each(?))",
        (json.dumps([event.seq for event in events]),),
    )
    kept = set(rows.fetchall())
    return Batch(
        tuple(e for e in sorted(events, key=lambda e: e.seq) if (e.seq, e.event_id) in kept)
    )


def _decode(row: tuple[Any, ...]) -> Event:
    seq, event_id, user_id, item_id, code, ts, context, size, uploaded_at = row
    return Event(
        seq=seq,
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        event_code=code,
        timestamp=ts,
        context=json.loads(context) if context is not None else None,
        size=size,
        uploaded_at=uploaded_at,
    )


def mark_uploaded(db: sqlite_utils.Database, batch: Batch, now: float) -> int:
    """Mark the batch's still-pending events uploaded at ``now``; returns how many were."""
    cursor = db.conn.executemany(
        "UPDATE events SET uploaded_at = ? WHERE seq = ? AND event_id = ? AND uploaded_at IS NULL",
        [(now, event.seq, event.event_id) for event in batch.events],
    )
    return max(cursor.rowcount, 0)


def delete_expired(db: sqlite_utils.Database, cutoff: float) -> int:
    """Delete uploaded events with a timestamp before ``cutoff``; returns how many."""
    cursor = db.conn.execute(
        "DELETE FROM events WHERE uploaded_at IS NOT NULL AND ts < ?", (cutoff,)
    )
    return cursor.rowcount


def set_logging(db: sqlite_utils.Database, *, enabled: bool, now: float) -> None:
    """Turn logging on or off (recording when it was turned off)."""
    db.conn.execute(
        "UPDATE outbox SET logging_enabled = ?, opted_out_at = ? WHERE id = 1",
        (int(enabled), None if enabled else now),
    )


def purge_pending(db: sqlite_utils.Database) -> int:
    """Delete every pending event (not counted as dropped); returns how many."""
    return db.conn.execute("DELETE FROM events WHERE uploaded_at IS NULL").rowcount


def stats(db: sqlite_utils.Database) -> OutboxStats:
    """The outbox totals (see :class:`OutboxStats`)."""
    pending, pending_bytes, dropped, enabled = db.conn.execute(
        "SELECT pending_events, pending_bytes, dropped_events, logging_enabled "
        "FROM outbox WHERE id = 1"
    ).fetchone()
    uploaded = db.table("events").count_where("uploaded_at IS NOT NULL")
    quarantined = db.table("quarantine").count
    return OutboxStats(pending, pending_bytes, dropped, uploaded, bool(enabled), quarantined)


def user_events(db: sqlite_utils.Database, user_id: str) -> list[Event]:
    """Every stored event of ``user_id`` (pending and uploaded), in sequence order."""
    rows = db.conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq", (user_id,)
    )
    return [_decode(row) for row in rows]


def recent_user_events(db: sqlite_utils.Database, user_id: str, limit: int) -> list[Event]:
    """The last ``limit`` stored events of ``user_id`` (pending and uploaded), in sequence order."""
    rows = db.conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
        (user_id, limit),
    ).fetchall()
    return [_decode(row) for row in reversed(rows)]


def dismissed_items(db: sqlite_utils.Database, user_id: str) -> list[str]:
    """Items ``user_id`` dismissed with no later positive event on them (the runtime's "never
    shown again"), in the order of their last dismissal."""
    dismissed = f"max(CASE WHEN event_type = {int(EventType.DISMISS)} THEN seq END)"
    engaged = f"max(CASE WHEN event_type IN ({_POSITIVE}) THEN seq END)"
    rows = db.conn.execute(  # one pass over the user's events (index events_user)
        f"SELECT item_id FROM events WHERE user_id = ? GROUP BY item_id "
        f"HAVING {dismissed} > coalesce({engaged}, -1) ORDER BY {dismissed}",
        (user_id,),
    )
    return [item_id for (item_id,) in rows]


def delete_user_events(db: sqlite_utils.Database, user_id: str) -> int:
    """Delete every stored event of ``user_id``; returns how many."""
    return db.conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
