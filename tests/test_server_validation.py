"""``parse_batch``'s fast path for the common event equals its complete checks, field by field,
for values on both sides of every check (``pocketrec.server.validation``)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.core import wire
from pocketrec.core.events import EVENT_NAMES
from pocketrec.server import validation as v

_IDS = st.one_of(
    st.text(min_size=0, max_size=6),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
    st.just("x" * wire.MAX_ID_BYTES),
    st.just("x" * (wire.MAX_ID_BYTES + 1)),
    st.just("é" * (wire.MAX_ID_BYTES // 2 + 1)),
    st.sampled_from(["u\x7f", "u\x85", "\ud800", 'quote"and\\slash', "tab\t"]),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_EVENT_IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=wire.MAX_TIMESTAMP),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**63 - 1, 2**63, -1, 0.0, wire.MAX_TIMESTAMP, 1e999]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_CONTEXTS = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
    st.just({"big": "x" * wire.MAX_EVENT_BYTES}),
    st.just("text"),
    st.lists(st.integers(), max_size=2),
)


def _complete(index: int, raw: dict[str, Any]) -> v.EventRecord:
    """The event through the complete per-field checks only, in the documented order."""
    event_id = v._event_id(index, raw.get("event_id"))
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or event_type not in EVENT_NAMES:
        raise v.SchemaViolation(f"events[{index}].event_type", "not an event name")
    user_id = v._id(index, "user_id", raw.get("user_id"))
    item_id = v._id(index, "item_id", raw.get("item_id"))
    context = v._context(index, raw.get("context"))
    size = wire.event_size(user_id, item_id, context)
    if size > wire.MAX_EVENT_BYTES:
        raise v.TooLarge(f"events[{index}]", size, wire.MAX_EVENT_BYTES)
    seq = v._seq(index, raw.get("seq"))
    return v.EventRecord(
        event_id, seq, user_id, item_id, event_type, v._timestamp(index, raw.get("timestamp")),
        context,
    )  # fmt: skip


def _outcome(check: Any, *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", check(*args))
    except v.TooLarge as exc:
        return ("too_large", exc.field)
    except v.SchemaViolation as exc:
        return ("schema", exc.field)


@given(
    event_id=_EVENT_IDS,
    event_type=st.sampled_from([*EVENT_NAMES, "CLICK", "", None, 3]),
    user_id=_IDS,
    item_id=_IDS,
    seq=_NUMBERS,
    timestamp=_NUMBERS,
    context=_CONTEXTS,
)
@settings(max_examples=600, deadline=None)
def test_the_fast_path_answers_as_the_complete_checks(**raw: Any) -> None:
    assert _outcome(v._event, 4, raw) == _outcome(_complete, 4, raw)


def test_a_parsed_batch_round_trips_through_json() -> None:
    events = [
        {"event_id": f"6f1c1a8e-1b7e-4c1e-9a53-8c1d2e3f4a{i:02x}", "seq": i + 1, "user_id": "u",
         "item_id": f"i{i}", "event_type": "click", "timestamp": 1.7e9 + i, "context": None}
        for i in range(30)
    ]  # fmt: skip
    parsed = v.parse_batch(json.dumps({"events": events}).encode())
    assert [e._asdict() for e in parsed] == [
        {**e, "timestamp": float(e["timestamp"])} for e in events
    ]


# Both orjson fast paths (module docstring of pocketrec.server.validation) against the json module.

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.sampled_from(["\ud800", "a\x00b", "\x7f\x85\u2028", 'q"\\/', "é😀"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def _context_by_json_module(value: Any) -> tuple[str, Any]:
    try:
        text = wire.json_text(value)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return ("schema", "events[0].context")
    return ("ok", text)


@given(context=st.dictionaries(st.text(max_size=4), _VALUES, max_size=4) | st.just({}))
@settings(max_examples=400, deadline=None)
def test_a_context_is_written_as_the_json_module_writes_it(context: dict[str, Any]) -> None:
    assert _outcome(v._context, 0, context) == _context_by_json_module(context)


def _parsed_by_json_module(body: bytes) -> tuple[str, Any]:
    try:
        return ("ok", json.loads(body.decode("utf-8"), parse_constant=v._no_constant))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ("schema", "body")


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True would hide a change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


_ODD_BODIES = [
    *(b"1e999", b"[-1e999]", b"NaN", b"[Infinity]", b'"\\ud800"', b"[12345678901234567890123]"),
    *(b"-0", b"1E5", b'{"a":1,"a":2}', b"\xef\xbb\xbf{}", b"[1,]", b"\xff", b"[" * 40 + b"]" * 40),
    *(b"9223372036854775807", b"18446744073709551616", b'"\x01"', b" {} "),
    *(b"[1234567890123456789]", b'{"c":{"n":123456789012345678901}}'),
]
_BODIES = st.one_of(
    _VALUES.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
    _VALUES.map(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")),
    st.sampled_from(_ODD_BODIES),
    st.binary(max_size=12),
)


@given(body=_BODIES)
@settings(max_examples=400, deadline=None)
def test_a_body_is_read_as_the_json_module_reads_it(body: bytes) -> None:
    expected = _parsed_by_json_module(body)
    try:
        got: tuple[str, Any] = ("ok", v._parse(body))
    except v.SchemaViolation as exc:
        got = ("schema", exc.field)
    assert got[0] == expected[0]
    assert got[0] != "ok" or _same(got[1], expected[1])
