"""The sync wire format's limits and sizes: the one place the device store, the sync client and
the sync server read them from.

An event travels as one JSON object of ``POST /v1/events`` (``{"events": [event, ...]}``)::

    {"event_id": UUID, "seq": int, "user_id": str, "item_id": str, "event_type": name,
     "timestamp": seconds, "context": object | null}

Its *size* (:func:`event_size`) is what both sides count against :data:`MAX_EVENT_BYTES`: a
fixed :data:`EVENT_OVERHEAD_BYTES` (the keys, the punctuation and the largest ``event_id``,
``seq``, ``event_type`` and ``timestamp`` can be, plus one separating comma) plus the compact
UTF-8 JSON of ``user_id``, ``item_id`` and ``context``. The device counts it when an event is
logged, the server on the fields it parsed, with the same function, so an event the device
accepts is never too large for the server, and the size bounds the event's bytes in a request
body however the device encodes it (``tests/test_wire.py``). A batch of events whose sizes add
up to at most ``B`` is a body of at most ``B + BATCH_ENVELOPE_BYTES`` bytes.

Ids (:func:`id_problem`): non-empty text of at most :data:`MAX_ID_BYTES` UTF-8 bytes, without
control characters (Unicode category Cc: NUL, tab, newline, ...) or lone surrogates. A context
nests lists and objects at most :data:`MAX_JSON_DEPTH` levels below itself, so a whole request
body nests at most :data:`MAX_BODY_DEPTH` levels (the server checks that before it parses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pocketrec.core.events import EVENT_NAMES

MAX_ID_BYTES = 512
"""Longest user, item or device-side id, in UTF-8 bytes."""

MAX_EVENT_BYTES = 32 * 1024
"""Largest event, by :func:`event_size` (32 KiB)."""

MAX_BATCH_BYTES = 500 * 1024
"""Largest ``POST /v1/events`` body the server reads (500 KiB, however it is framed)."""

DEFAULT_BATCH_EVENTS = 500
"""Events per upload request, at most."""

DEFAULT_BATCH_BYTES = 256 * 1024
"""Sum of :func:`event_size` per upload request, at most: the body stays under half of
:data:`MAX_BATCH_BYTES`, so a server with a smaller limit still takes a halved batch."""

DOWNLOAD_CHUNK_BYTES = 64 * 1024
"""Bytes read and written per chunk while a bundle file downloads."""

MAX_TIMESTAMP = 32_503_680_000.0
"""Latest accepted event time: 3000-01-01T00:00:00Z, in seconds since the epoch (UTC)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of lists and objects in an event's context (and other stored JSON values): a
value may sit at most this many levels below the context object itself."""

MAX_BODY_DEPTH = MAX_JSON_DEPTH + 4
"""Deepest bracket nesting (``[`` or ``{``) in a ``POST /v1/events`` body: the body object, its
``events`` list, an event and its context are four levels, the context's own values the rest."""

_UUID_CHARS = 36
_SEQ_DIGITS = len(str(2**63 - 1))
_TIMESTAMP_CHARS = 24  # repr() of any float in [0, MAX_TIMESTAMP] is shorter
_EVENT_NAME_CHARS = max(len(name) for name in EVENT_NAMES)
_TEMPLATE = '{"event_id":"","seq":,"user_id":,"item_id":,"event_type":"","timestamp":,"context":}'

EVENT_OVERHEAD_BYTES = (
    len(_TEMPLATE) + _UUID_CHARS + _SEQ_DIGITS + _EVENT_NAME_CHARS + _TIMESTAMP_CHARS + 1
)
"""Bytes an event counts on top of the JSON of its ids and context (see the module docstring)."""

BATCH_ENVELOPE_BYTES = len('{"events":[]}')
"""Bytes of a request body around its events."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_C0_AND_DEL = bytes(range(0x20)) + b"\x7f"
_C1_LEAD = b"\xc2"  # UTF-8 of U+0080..U+00BF (the C1 controls among them) starts with it


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""One encoder for every call: ``json.dumps`` with these options builds a new one each time."""


def json_text(value: Any) -> str:
    """Compact JSON as the wire carries it (no spaces, UTF-8 kept, keys in the given order)."""
    return _COMPACT.encode(value)


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
"""What :func:`json_text` escapes in a string (``ensure_ascii=False``): quote, backslash, C0."""


def json_bytes(value: Any) -> int:
    """Bytes of :func:`json_text` of ``value`` in UTF-8."""
    if isinstance(value, str) and not _JSON_ESCAPED.search(value):
        return len(value.encode("utf-8")) + 2  # the text between two quotes, as it is
    return len(json_text(value).encode("utf-8"))


def event_size(user_id: str, item_id: str, context_json: str | None) -> int:
    """The size of an event in bytes (module docstring); ``context_json`` is the context's
    compact JSON text (:func:`json_text`) or ``None``."""
    context = 4 if context_json is None else len(context_json.encode("utf-8"))  # 4: null
    return EVENT_OVERHEAD_BYTES + json_bytes(user_id) + json_bytes(item_id) + context


def id_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an id (module docstring), or ``None`` if it is fine."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if _CONTROL.search(value):
        return "must not contain control characters (NUL, tab, newline, ...)"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text (a lone surrogate)"
    if size > MAX_ID_BYTES:
        return f"is {size} bytes of UTF-8; the limit is {MAX_ID_BYTES}"
    return None


def first_id_problem(values: Sequence[str]) -> tuple[int, str] | None:
    """``(index, problem)`` of the first of ``values`` that :func:`id_problem` refuses, or
    ``None``. Ids that are all fine (the common case: a catalog's ids) are checked in a few
    passes over their joined UTF-8 bytes (100k ids in a few ms, ten times faster than one by one);
    otherwise, or when they hold a character from U+0080 to U+00BF, one by one."""
    try:
        joined = "".join(values).encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        joined = None
    fast = (
        joined is not None
        and all(values)
        and max(map(len, values), default=0) <= MAX_ID_BYTES // 4  # <= 4 bytes per character
        and len(joined.translate(None, _C0_AND_DEL)) == len(joined)
        and _C1_LEAD not in joined
    )
    if fast:
        return None
    for index, value in enumerate(values):
        problem = id_problem(value)
        if problem is not None:
            return index, problem
    return None
