"""Data requests and retention on the server: export or erase the events of one device (or of one
of its users), and drop events older than a number of days.

Reached three ways, with the same functions: the command line (``pocketrec data export|erase``,
``pocketrec retention``), the authenticated admin routes of the HTTP API
(``/v1/admin/devices/{device_id}/events``, ``pocketrec.server.app``), and ``pocketrec serve
--retention-days N`` (retention at start and then daily).

An export is JSON lines, one event per line in arrival order (:func:`event_record`: the fields
the device sent, ``context`` as a JSON object, plus ``device_id``); a file export appears
atomically (``pocketrec.core.files``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pocketrec.core import wire
from pocketrec.core.files import install_file
from pocketrec.server.storage import FeedbackStorage, Retention, StoredEvent, check_device_id

DAY_SECONDS = 86_400.0


def event_record(event: StoredEvent) -> dict[str, Any]:
    """One stored event as JSON-serializable data (``context`` parsed back into an object)."""
    return {
        "event_id": event.event_id,
        "device_id": event.device_id,
        "seq": event.seq,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "context": None if event.context is None else json.loads(event.context),
    }


def json_lines(
    storage: FeedbackStorage, device_id: str, user_id: str | None = None
) -> Iterator[bytes]:
    """The export of ``device_id`` (or of its ``user_id``) as UTF-8 JSON lines, streamed. The
    ids are checked at once (``ValueError``), before the first line is read."""
    device, user = _checked(device_id, user_id)
    return _lines(storage.export_events(device, user))


def _lines(events: Iterator[StoredEvent]) -> Iterator[bytes]:
    for event in events:
        yield (json.dumps(event_record(event), ensure_ascii=False) + "\n").encode("utf-8")


def export_to_file(
    storage: FeedbackStorage,
    device_id: str,
    out: str | os.PathLike[str],
    user_id: str | None = None,
) -> int:
    """Write the export to ``out`` (complete or absent, via a temporary file beside it);
    returns the number of events."""
    target = Path(out)
    staging = target.with_name(f".{target.name}.tmp")
    count = 0
    with staging.open("wb") as fh:
        for line in json_lines(storage, device_id, user_id):
            fh.write(line)
            count += 1
    install_file(staging, target)
    return count


def erase(storage: FeedbackStorage, device_id: str, user_id: str | None = None) -> int:
    """Delete the events of ``device_id`` (or of its ``user_id``) in one transaction; returns
    how many. Their ids are forgotten too: a device that sends them again stores them again."""
    device, user = _checked(device_id, user_id)
    return storage.erase_events(device, user)


def apply_retention(
    storage: FeedbackStorage, days: float, *, now: float | None = None
) -> Retention:
    """Drop every event received more than ``days`` (> 0) days before ``now`` (default: the
    clock)."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days < 1e6:
        raise ValueError(f"days must be a number of days > 0, got {days!r}")
    moment = time.time() if now is None else now
    return storage.drop_events_before(moment - days * DAY_SECONDS)


class InvalidId(ValueError):
    """A device or user id of a data request is not an id; ``field`` says which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _checked(device_id: str, user_id: str | None) -> tuple[str, str | None]:
    try:
        device = check_device_id(device_id)
    except ValueError as exc:
        raise InvalidId("device_id", str(exc)) from None
    if user_id is not None and (problem := wire.id_problem(user_id)) is not None:
        raise InvalidId("user_id", f"user id {user_id!r} {problem}")
    return device, user_id
