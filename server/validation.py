"""Schema and size checks of an uploaded batch (``POST /v1/events``).

Body: a JSON object ``{"events": [event, ...]}``; each event an object with ``event_id`` (a UUID
string, stored in its canonical lower-case hyphenated form), ``user_id`` and ``item_id`` (ids as
``pocketrec.core.wire.id_problem`` accepts them), ``event_type`` (a name of
``pocketrec.core.events``), ``timestamp`` (finite seconds since the epoch, 0 to the year 3000),
optional ``seq`` (int >= 1) and ``context`` (a JSON object or null). Unknown fields are ignored
(newer devices may send more).

Limits (``pocketrec.core.wire``, shared with the device): the body at most
:data:`MAX_BATCH_BYTES`, each event at most :data:`MAX_EVENT_BYTES` by ``wire.event_size`` (the
device's own count); a violation raises :class:`TooLarge` (HTTP 413). A schema violation raises
:class:`SchemaViolation` naming the field (``events[3].timestamp``, HTTP 422).

Hostile bodies are refused while or after parsing, never with a crash: the body must be UTF-8
(strict) JSON, nested at most ``wire.MAX_BODY_DEPTH`` brackets deep (the parser's own recursion
guard refuses anything deeper than the interpreter's recursion limit, :func:`value_depth` the
rest), without the non-standard ``NaN``/``Infinity`` constants; integers too long to convert and
numbers that overflow to infinity are refused where their field is checked.

Every event of every upload runs through :func:`_event`: it checks the common case (canonical
UUID, printable ASCII ids, a float timestamp, no context) with a few cheap tests and falls back
to the complete checks, which also word the error, only when one of them fails.

Two fast paths give the same result as the json module, never another (``tests/
test_server_validation.py`` checks both against it): the body is parsed by orjson unless it holds
a run of 19 or more digits (orjson reads an integer beyond 64 bits as a float; the json module
keeps it exact) and, on any error, parsed again by the json module, whose acceptance and error
messages stay the rule; a *flat* context (str, bool, null or 64-bit int values) is written by
orjson, whose compact text equals :func:`pocketrec.core.wire.json_text`'s for such values (not
for floats: orjson writes ``1e-5`` where the json module writes ``1e-05``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeGuard

import orjson

from pocketrec.core import wire
from pocketrec.core.events import EVENT_NAMES
from pocketrec.core.wire import MAX_BATCH_BYTES, MAX_EVENT_BYTES

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "EventRecord",
    "SchemaViolation",
    "TooLarge",
    "parse_batch",
    "value_depth",
]


class EventRecord(NamedTuple):
    """One checked event (``context`` kept as compact JSON text). A named tuple: one is built
    for every event of every upload, and the storages bind its fields as they are."""

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
    raw = _parse(body)
    try:
        depth = value_depth(raw)
    except RecursionError:
        depth = None
    if depth is None or depth > wire.MAX_BODY_DEPTH:
        raise _too_deep(depth)
    if not isinstance(raw, dict):
        raise SchemaViolation("body", "must be a JSON object")
    events = raw.get("events")
    if not isinstance(events, list):
        raise SchemaViolation("events", "missing or not a list")
    return [_event(i, event) for i, event in enumerate(events)]


def _parse(body: bytes) -> Any:
    """The body's JSON value, exactly as the json module reads it (module docstring)."""
    if _LONG_DIGITS not in body.translate(_DIGITS_AS_NINES):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the json module decides, and words the error
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaViolation(
            "body", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise _too_deep(None) from None
    except ValueError as exc:  # JSONDecodeError, an integer of over 4300 digits, NaN/Infinity
        raise SchemaViolation("body", f"not valid JSON ({exc})") from None


_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)
_LONG_DIGITS = b"9" * 19
"""A run of digits that may be an integer beyond 64 bits (2^63 has 19 digits), looked for in the
body with every digit made a 9 (a tenth of the time a regular expression takes)."""


def _too_deep(depth: int | None) -> SchemaViolation:
    levels = "too many levels" if depth is None else f"{depth} levels"
    return SchemaViolation("body", f"JSON nested {levels} deep; the limit is {wire.MAX_BODY_DEPTH}")


def value_depth(value: object) -> int:
    """The bracket nesting of a parsed JSON value (``[``/``{`` levels of its text): 0 for a
    scalar, 1 + the deepest child for a list or an object. Recursive, so only for values the
    parser built (their depth is bounded by its recursion guard); a flat object, every event of
    a normal upload, costs one type test per field."""
    if type(value) is dict:
        children: Iterable[object] = value.values()
    elif type(value) is list:
        children = value
    else:
        return 0
    deepest = 0
    for child in children:
        if type(child) is dict or type(child) is list:
            depth = value_depth(child)
            if depth > deepest:
                deepest = depth
    return 1 + deepest


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
"""``json.loads(text, parse_constant=...)`` would build a decoder for every body."""


_EVENT_TYPES = frozenset(EVENT_NAMES)
_MAX_FAST_ID = wire.MAX_ID_BYTES
_FAST_SIZE_OK = wire.EVENT_OVERHEAD_BYTES + 2 * (2 * wire.MAX_ID_BYTES + 2) + 4 <= MAX_EVENT_BYTES
"""Two ids of printable ASCII (each byte escaped at worst as two) and no context can never make
an event too large, so the common case skips ``wire.event_size``."""
_MAX_SEQ = 2**63


def _fast_id(value: object) -> TypeGuard[str]:
    """``value`` is certainly a valid id: printable ASCII of 1 to ``MAX_ID_BYTES`` characters."""
    return (
        type(value) is str
        and 0 < len(value) <= _MAX_FAST_ID
        and value.isascii()
        and value.isprintable()
    )


def _event(index: int, raw: object) -> EventRecord:
    """Event ``index`` of the batch, checked (field names in errors: ``events[i].<key>``, only
    formatted when a check fails: this runs for every event of every upload)."""
    if not isinstance(raw, dict):
        raise SchemaViolation(f"events[{index}]", "must be a JSON object")
    get = raw.get
    event_id = get("event_id")
    if type(event_id) is not str or not _CANONICAL_UUID.fullmatch(event_id):
        event_id = _event_id(index, event_id)
    event_type = get("event_type")
    if type(event_type) is not str or event_type not in _EVENT_TYPES:
        raise SchemaViolation(
            f"events[{index}].event_type", f"must be one of {', '.join(EVENT_NAMES)}"
        )
    raw_user, raw_item = get("user_id"), get("item_id")
    user_id = raw_user if _fast_id(raw_user) else _id(index, "user_id", raw_user)
    item_id = raw_item if _fast_id(raw_item) else _id(index, "item_id", raw_item)
    context = get("context")
    if context is not None or not _FAST_SIZE_OK:
        context = _context(index, context)
        size = wire.event_size(user_id, item_id, context)
        if size > MAX_EVENT_BYTES:
            raise TooLarge(f"events[{index}]", size, MAX_EVENT_BYTES)
    seq = get("seq")
    if seq is not None and not (type(seq) is int and 1 <= seq < _MAX_SEQ):
        seq = _seq(index, seq)
    timestamp = get("timestamp")
    if not (type(timestamp) is float and 0.0 <= timestamp <= wire.MAX_TIMESTAMP):
        timestamp = _timestamp(index, timestamp)  # NaN fails the comparison above too
    return EventRecord(event_id, seq, user_id, item_id, event_type, timestamp, context)


def _event_id(index: int, value: object) -> str:
    """The canonical form of a UUID (one UUID written five ways is one event)."""
    if not isinstance(value, str) or len(value) > 64 or not value.isascii():
        raise SchemaViolation(f"events[{index}].event_id", "must be a UUID string")
    if _CANONICAL_UUID.fullmatch(value):
        return value  # already the canonical form (what str(uuid.UUID(value)) gives)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise SchemaViolation(f"events[{index}].event_id", "not a UUID") from None


def _id(index: int, key: str, value: object) -> str:
    problem = wire.id_problem(value)
    if problem is not None:
        raise SchemaViolation(f"events[{index}].{key}", problem)
    assert isinstance(value, str)
    return value


def _seq(index: int, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**63:
        raise SchemaViolation(f"events[{index}].seq", "must be an integer from 1 to 2^63 - 1")
    return value


def _timestamp(index: int, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchemaViolation(
            f"events[{index}].timestamp", "must be a number (seconds since the epoch)"
        )
    try:
        seconds = float(value)
    except OverflowError:
        raise SchemaViolation(f"events[{index}].timestamp", "out of range") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= wire.MAX_TIMESTAMP:
        raise SchemaViolation(
            f"events[{index}].timestamp", "must be finite seconds from 1970 to the year 3000"
        )
    return seconds


_FLAT_TYPES = frozenset((str, bool, int, type(None)))


def _flat(context: dict[Any, Any]) -> bool:
    """Every value of ``context`` is a string, a bool, null or an int: orjson then writes the
    same compact text as :func:`pocketrec.core.wire.json_text` (or refuses)."""
    return all(map(_FLAT_TYPES.__contains__, map(type, context.values())))  # no generator


def _context(index: int, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaViolation(f"events[{index}].context", "must be a JSON object or null")
    if _flat(value):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass  # a lone surrogate, or an int beyond 64 bits: worded below
    try:
        text = wire.json_text(value)
    except ValueError as exc:  # a number that overflowed to infinity
        raise SchemaViolation(f"events[{index}].context", f"not storable as JSON ({exc})") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaViolation(
            f"events[{index}].context", "is not valid UTF-8 text (a lone surrogate)"
        ) from None
    return text
