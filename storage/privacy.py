"""A user's data requests and the device-wide opt-out.

- Opt-out turns logging off and deletes every event not yet uploaded, in one transaction, so no
  event logged before it can still leave the device and none is logged after it. Events already
  uploaded stay until retention deletes them; user state (on-device personalization) is kept.
- Export gathers everything stored about one user (events, pending and uploaded, and state) as
  JSON-serializable data; erase deletes it all in one transaction.

Deleted rows are overwritten with zeros (``secure_delete``); the store checkpoints the WAL after
an erase or opt-out so the old pages do not linger in the ``-wal`` file either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from pocketrec.storage import events, state

EXPORT_FORMAT = "pocketrec-user-export"
EXPORT_VERSION = 1


@dataclass(frozen=True)
class Erasure:
    """What :meth:`Store.erase_user` deleted: the user's events and whether a state existed."""

    events: int
    state: bool


def opt_out(db: sqlite_utils.Database, now: float) -> int:
    """Turn logging off and purge the pending events; returns how many were purged."""
    events.set_logging(db, enabled=False, now=now)
    return events.purge_pending(db)


def export(db: sqlite_utils.Database, user_id: str, now: float) -> dict[str, Any]:
    """Everything stored about ``user_id`` (see :meth:`Store.export_user` for the layout)."""
    saved = state.load(db, user_id)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "user_id": user_id,
        "exported_at": now,
        "events": [
            {**event.to_upload(), "size": event.size, "uploaded_at": event.uploaded_at}
            for event in events.user_events(db, user_id)
        ],
        "state": None if saved is None else state.export(saved),
    }


def erase(db: sqlite_utils.Database, user_id: str) -> Erasure:
    """Delete every event and the state of ``user_id``."""
    return Erasure(events=events.delete_user_events(db, user_id), state=state.delete(db, user_id))
