"""The wire module is the one source of truth for sizes and limits: the device store and the sync
server count an event's size with the same function, and that size bounds the event's bytes in
an upload body."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.core import wire
from pocketrec.core.events import EVENT_NAMES
from pocketrec.runtime.sync import upload
from pocketrec.server import validation
from pocketrec.storage import MAX_EVENT_BYTES, Store, events

ids = st.text(min_size=1, max_size=40).filter(lambda text: wire.id_problem(text) is None)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
    allow_infinity=False), st.text(max_size=30),
)  # fmt: skip
contexts = st.none() | st.dictionaries(
    st.text(max_size=10),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=5), inner, max_size=4), max_leaves=12),
    max_size=5,
)  # fmt: skip


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    user=ids,
    item=ids,
    context=contexts,
    seq=st.integers(1, 2**63 - 1),
    ts=st.floats(0, wire.MAX_TIMESTAMP),
    name=st.sampled_from(EVENT_NAMES),
)
def test_the_size_bounds_the_wire_bytes_and_both_sides_count_the_same(
    user: str, item: str, context: dict[str, Any] | None, seq: int, ts: float, name: str
) -> None:
    row = events.prepare(events.NewEvent(user, item, name, ts, context), now=0.0)
    event = events.Event(seq, row.event_id, user, item, row.code, ts, context, row.size)
    sent = json.dumps(event.to_upload(), separators=(",", ":"), ensure_ascii=False)
    assert len(sent.encode("utf-8")) + 1 <= row.size  # + 1: the comma between events
    (parsed,) = validation.parse_batch(json.dumps({"events": [event.to_upload()]}).encode())
    assert wire.event_size(parsed.user_id, parsed.item_id, parsed.context) == row.size


def test_an_event_the_device_accepts_at_the_limit_is_accepted_by_the_server(store: Store) -> None:
    # before the wire module, the device counted 32,768 bytes where the server counted 32,851
    fixed = wire.event_size("u", "i", '{"pad":""}')
    logged = store.append("u", "i", "view", context={"pad": "é" * ((MAX_EVENT_BYTES - fixed) // 2)})
    assert logged is not None
    assert MAX_EVENT_BYTES - 1 <= logged.size <= MAX_EVENT_BYTES
    (parsed,) = validation.parse_batch(json.dumps({"events": [logged.to_upload()]}).encode())
    assert parsed.event_id == logged.event_id


def test_a_default_batch_fits_the_server_body_limit(store: Store) -> None:
    pad = "x" * (MAX_EVENT_BYTES - wire.event_size("u", "i", '{"p":""}'))
    store.append_many(events.NewEvent("u", "i", "view", context={"p": pad}) for _ in range(20))
    batch = store.pending()
    body = upload.request_body(batch.events)
    assert batch.size <= wire.DEFAULT_BATCH_BYTES
    assert len(body) <= batch.size + wire.BATCH_ENVELOPE_BYTES <= wire.MAX_BATCH_BYTES


def test_one_uuid_written_five_ways_is_one_event_id() -> None:
    value = uuid.uuid4()
    forms = [str(value), str(value).upper(), value.hex, f"{{{value}}}", f"urn:uuid:{value}"]
    base = {"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": 1.0}
    body = json.dumps({"events": [{**base, "event_id": form} for form in forms]}).encode()
    assert {record.event_id for record in validation.parse_batch(body)} == {str(value)}


def test_ids_are_checked_the_same_on_both_sides() -> None:
    for bad in ["", "a\x00b", "tab\there", "x" * (wire.MAX_ID_BYTES + 1), "\ud800"]:
        assert wire.id_problem(bad) is not None
    assert wire.id_problem("é" * (wire.MAX_ID_BYTES // 2)) is None


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.text(max_size=6) | st.sampled_from(["", "a\x85b", "é" * 300, "\ud800", "£", "ok"]),
        max_size=8,
    )
)
def test_first_id_problem_is_id_problem_of_the_first_bad_id(values: list[str]) -> None:
    expected = next(
        ((i, wire.id_problem(v)) for i, v in enumerate(values) if wire.id_problem(v)), None
    )
    assert wire.first_id_problem(values) == expected


@given(st.text(max_size=60) | st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\u2028", "é"]))
@settings(max_examples=300, deadline=None)
def test_json_bytes_counts_a_string_as_its_compact_json(text: str) -> None:
    try:
        expected = len(wire.json_text(text).encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: both ways refuse it
        expected = None
    if expected is None:
        try:
            wire.json_bytes(text)
        except UnicodeEncodeError:
            return
        raise AssertionError("a lone surrogate was counted")
    assert wire.json_bytes(text) == expected
