"""Schema and size checks of an uploaded batch (``POST /v1/events``).

Body: a JSON object ``{"events": [event, ...]}``; each event an object with ``event_id`` (a UUID
string), ``user_id`` and ``item_id`` (non-empty strings of at most 512 UTF-8 bytes),
``event_type`` (a name of ``pocketrec.core.events``), ``timestamp`` (finite seconds since the
epoch, >= 0), optional ``seq`` (int >= 1) and ``context`` (a JSON object or null). Unknown fields
are ignored (newer devices may send more).

Limits: the body at most :data:`MAX_BATCH_BYTES`, each event (compact JSON, UTF-8) at most
:data:`MAX_EVENT_BYTES`; a violation raises :class:`TooLarge` (HTTP 413). A schema violation
raises :class:`SchemaViolation` naming the field (``events[3].timestamp``, HTTP 422).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from pocketrec.core.events import EVENT_NAMES

MAX_BATCH_BYTES = 500 * 1024
"""Largest accepted request body, in bytes (500 KiB)."""

MAX_EVENT_BYTES = 32 * 1024
"""Largest accepted event, in bytes of its compact JSON (32 KiB)."""

MAX_ID_BYTES = 512


@dataclass(frozen=True)
class EventRecord:
    """One checked event (``context`` kept as compact JSON text)."""

    event_id: str
    seq: int | None
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    context: str | None


class SchemaViolation(ValueError):
    """The batch does not follow the schema; ``field`` names the failing field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class TooLarge(ValueError):
    """The batch or one event exceeds its size limit (``field``: ``"body"`` or ``events[i]``)."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(f"{field} is {size} bytes; the limit is {limit} bytes")
        self.field = field
        self.size = size
        self.limit = limit


def parse_batch(body: bytes) -> list[EventRecord]:
    """Check the whole body (size, JSON, every event) and return its events in order."""
    if len(body) > MAX_BATCH_BYTES:
        raise TooLarge("body", len(body), MAX_BATCH_BYTES)
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaViolation("body", f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SchemaViolation("body", "must be a JSON object")
    events = raw.get("events")
    if not isinstance(events, list):
        raise SchemaViolation("events", "missing or not a list")
    return [_event(f"events[{i}]", event) for i, event in enumerate(events)]


def _event(name: str, raw: object) -> EventRecord:
    if not isinstance(raw, dict):
        raise SchemaViolation(name, "must be a JSON object")
    size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        raise TooLarge(name, size, MAX_EVENT_BYTES)
    event_id = _text(f"{name}.event_id", raw.get("event_id"))
    try:
        uuid.UUID(event_id)
    except ValueError:
        raise SchemaViolation(f"{name}.event_id", "not a UUID") from None
    event_type = raw.get("event_type")
    if event_type not in EVENT_NAMES:
        raise SchemaViolation(f"{name}.event_type", f"must be one of {', '.join(EVENT_NAMES)}")
    return EventRecord(
        event_id=event_id,
        seq=_seq(f"{name}.seq", raw.get("seq")),
        user_id=_text(f"{name}.user_id", raw.get("user_id")),
        item_id=_text(f"{name}.item_id", raw.get("item_id")),
        event_type=str(event_type),
        timestamp=_timestamp(f"{name}.timestamp", raw.get("timestamp")),
        context=_context(f"{name}.context", raw.get("context")),
    )


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise SchemaViolation(field, "must be a non-empty string")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise SchemaViolation(field, f"longer than {MAX_ID_BYTES} bytes")
    return value


def _seq(field: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SchemaViolation(field, "must be an integer >= 1")
    return value


def _timestamp(field: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchemaViolation(field, "must be a number (seconds since the epoch)")
    if not math.isfinite(value) or value < 0:
        raise SchemaViolation(field, "must be finite and >= 0")
    return float(value)


def _context(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaViolation(field, "must be a JSON object or null")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
