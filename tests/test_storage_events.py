"""The event log and outbox: appends, sequence numbers, upload batches, caps and retention."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pocketrec.core.events import EventType
from pocketrec.storage import (
    EVENT_OVERHEAD_BYTES,
    MAX_EVENT_BYTES,
    Batch,
    Event,
    NewEvent,
    Store,
)

DAY = 86_400.0


def context_of_size(total: int, user: str = "u", item: str = "i") -> dict[str, str]:
    """A context that makes an event of ``user``/``item`` exactly ``total`` bytes."""
    fixed = EVENT_OVERHEAD_BYTES + len(f'"{user}""{item}"') + len('{"pad":""}')
    return {"pad": "x" * (total - fixed)}


def test_append_returns_the_committed_event(store: Store) -> None:
    before = time.time()
    event = store.append("user-1", "item-9", "click", context={"screen": "home", "rank": 2})
    assert isinstance(event, Event)
    assert event.seq == 1
    assert uuid.UUID(event.event_id).version == 4
    assert (event.user_id, event.item_id, event.event_type) == ("user-1", "item-9", "click")
    assert event.event_code == EventType.CLICK
    assert before <= event.timestamp <= time.time()
    assert event.context == {"screen": "home", "rank": 2}
    context_bytes = len(json.dumps(event.context, separators=(",", ":")))
    assert event.size == EVENT_OVERHEAD_BYTES + len('"user-1""item-9"') + context_bytes
    assert event.uploaded_at is None
    assert store.pending().events == (event,)


def test_event_types_by_name_code_or_enum(store: Store) -> None:
    logged = [
        store.append("u", "i", " Purchase "),
        store.append("u", "i", EventType.DISLIKE),
        store.append("u", "i", 5),
    ]
    assert [e.event_type for e in logged if e is not None] == ["purchase", "dislike", "dismiss"]


def test_explicit_timestamp_and_upload_encoding(store: Store) -> None:
    context = {"text": "caf\u00e9 \u2615 '; DROP TABLE events; --", "n": [1, 2.5, None, True]}
    event = store.append("u", "i", "like", timestamp=1_700_000_000.25, context=context)
    assert event is not None
    upload = event.to_upload()
    assert upload == {
        "event_id": event.event_id,
        "seq": 1,
        "user_id": "u",
        "item_id": "i",
        "event_type": "like",
        "timestamp": 1_700_000_000.25,
        "context": context,
    }
    assert json.loads(json.dumps(upload)) == upload
    assert store.pending().events[0].context == context


def test_sequence_is_strictly_increasing_and_never_reused(store: Store) -> None:
    first = [store.append("u", f"i{n}", "view") for n in range(3)]
    assert [e.seq for e in first if e is not None] == [1, 2, 3]
    store.opt_out()  # deletes every pending event, the newest included
    store.opt_in()
    again = store.append("u", "i", "view")
    assert again is not None
    assert again.seq == 4


def test_append_many_is_one_transaction_with_consecutive_seqs(store: Store) -> None:
    logged = store.append_many(
        [NewEvent("u", f"i{n}", "view", timestamp=10.0 + n) for n in range(5)]
    )
    assert [e.seq for e in logged] == [1, 2, 3, 4, 5]
    assert [e.timestamp for e in logged] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert len({e.event_id for e in logged}) == 5
    assert store.append_many([]) == []
    assert store.stats().pending_events == 5


def test_append_many_rejects_the_whole_batch_and_names_the_event(store: Store) -> None:
    batch = [NewEvent("u", "i", "view"), NewEvent("u", "i", "view", timestamp=float("nan"))]
    with pytest.raises(ValueError, match=r"events\[1\]\.timestamp must be finite"):
        store.append_many(batch)
    with pytest.raises(ValueError, match=r"events\[0\] must be a NewEvent"):
        store.append_many([("u", "i", "view")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="iterable of NewEvent"):
        store.append_many("events")  # type: ignore[arg-type]
    assert store.stats().pending_events == 0
    assert store.append("u", "i", "view") == store.pending().events[0]
    assert store.pending().events[0].seq == 1  # the rejected batch consumed no sequence number


def test_event_size_limit_is_32_kib(store: Store) -> None:
    exact = store.append("u", "i", "view", context=context_of_size(MAX_EVENT_BYTES))
    assert exact is not None
    assert exact.size == MAX_EVENT_BYTES == 32 * 1024
    with pytest.raises(ValueError, match="limited to 32768 bytes"):
        store.append("u", "i", "view", context=context_of_size(MAX_EVENT_BYTES + 1))
    with pytest.raises(ValueError, match=r"context is .* bytes as JSON"):
        store.append("u", "i", "view", context={"pad": "x" * 40_000})
    assert store.stats().pending_events == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_id": b"u"}, "user_id must be a string, got bytes"),
        ({"user_id": ""}, "user_id must not be empty"),
        ({"item_id": "a\x00b"}, "item_id must not contain control characters"),
        ({"item_id": "\ud800"}, "item_id is not valid UTF-8"),
        ({"user_id": "x" * 513}, "user_id is 513 bytes of UTF-8; the limit is 512"),
        ({"event_type": "share"}, "unknown event type 'share'"),
        ({"event_type": 9}, "unknown event code 9"),
        ({"event_type": True}, "event_type must be an event name or code"),
        ({"event_type": 1.0}, "event_type must be an event name or code"),
        ({"timestamp": float("inf")}, "timestamp must be finite"),
        ({"timestamp": -1.0}, "timestamp must be seconds since the epoch"),
        ({"timestamp": 1e12}, "timestamp must be seconds since the epoch"),
        ({"timestamp": 10**400}, "timestamp is too large"),
        ({"timestamp": "now"}, "timestamp must be a number"),
        ({"context": ["a"]}, "context must be a JSON object"),
        ({"context": {"a": float("nan")}}, "non-finite number"),
        ({"context": {1: "a"}}, "non-str key"),
        ({"context": {"a": {1, 2}}}, "set .* which is not a JSON value"),
        ({"context": {"a": "\udfff"}}, "context is not valid UTF-8"),
    ],
)
def test_bad_events_raise_value_error_naming_the_problem(
    store: Store, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"user_id": "u", "item_id": "i", "event_type": "view"}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        store.append(
            arguments.pop("user_id"),
            arguments.pop("item_id"),
            arguments.pop("event_type"),
            **arguments,
        )
    assert store.stats().pending_events == 0


def test_too_deeply_nested_context_is_rejected(store: Store) -> None:
    context: dict[str, Any] = {}
    inner = context
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ValueError, match="nested deeper than 32"):
        store.append("u", "i", "view", context=context)


def test_sql_looking_strings_are_stored_verbatim(store: Store) -> None:
    nasty = "x'); DROP TABLE events; --"
    event = store.append(nasty, nasty, "view", context={nasty: nasty})
    assert event is not None
    stored = store.pending().events[0]
    assert (stored.user_id, stored.item_id, stored.context) == (nasty, nasty, {nasty: nasty})
    assert store.integrity_check() == "ok"


def test_pending_limits_by_count_and_bytes(store: Store) -> None:
    store.append_many(
        [NewEvent("u", "i", "view", context=context_of_size(10_000)) for _ in range(6)]
    )
    assert [e.seq for e in store.pending(max_events=2)] == [1, 2]
    by_bytes = store.pending(max_bytes=MAX_EVENT_BYTES)
    assert [e.seq for e in by_bytes] == [1, 2, 3]
    assert by_bytes.size == 30_000
    assert (by_bytes.first_seq, by_bytes.last_seq, len(by_bytes)) == (1, 3, 3)


def test_pending_argument_checks(store: Store) -> None:
    with pytest.raises(ValueError, match="max_events must be in 1"):
        store.pending(max_events=0)
    with pytest.raises(ValueError, match="max_bytes must be in 32768"):
        store.pending(max_bytes=1000)
    with pytest.raises(ValueError, match="batch must be a Batch"):
        store.mark_uploaded([])  # type: ignore[arg-type]


def test_empty_outbox_gives_an_empty_batch(store: Store) -> None:
    batch = store.pending()
    assert len(batch) == 0
    assert batch.size == 0
    assert batch.first_seq is None
    assert batch.last_seq is None
    assert store.mark_uploaded(batch) == 0


def test_unacknowledged_batch_is_returned_again_at_least_once(store: Store) -> None:
    store.append_many([NewEvent("u", f"i{n}", "click") for n in range(5)])
    first = store.pending(max_events=3)
    again = store.pending(max_events=3)
    assert first == again  # no ack: the same events, same ids
    assert store.mark_uploaded(first, now=time.time()) == 3
    assert store.mark_uploaded(first) == 0  # a repeated ack changes nothing
    rest = store.pending(max_events=3)
    assert [e.seq for e in rest] == [4, 5]
    stats = store.stats()
    assert (stats.pending_events, stats.uploaded_events) == (2, 3)


def test_mark_uploaded_ignores_events_that_are_not_this_stores(
    store: Store, tmp_path: Path
) -> None:
    store.append("u", "i", "view")
    with Store.open(tmp_path / "other.sqlite") as other:
        other.append("u", "i", "view")
        foreign = other.pending()
    assert foreign.events[0].seq == store.pending().events[0].seq  # same seq, other event id
    assert store.mark_uploaded(foreign) == 0
    assert store.stats().pending_events == 1


def test_count_cap_drops_the_oldest_pending_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path, max_pending_events=5) as store:
        for n in range(8):
            store.append("u", f"i{n}", "view")
        assert [e.seq for e in store.pending()] == [4, 5, 6, 7, 8]
        assert store.stats().dropped_events == 3
        store.mark_uploaded(store.pending(max_events=2))  # uploaded events do not count
        store.append_many([NewEvent("u", "j", "view"), NewEvent("u", "k", "view")])
        assert store.stats().dropped_events == 3
        store.append("u", "l", "view")
        assert store.stats().dropped_events == 4
        assert [e.seq for e in store.pending()] == [7, 8, 9, 10, 11]
    with Store.open(path, max_pending_events=5) as reopened:
        assert reopened.stats().dropped_events == 4  # the counter is persistent


def test_byte_cap_drops_the_oldest_pending(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite", max_pending_bytes=2 * MAX_EVENT_BYTES) as store:
        for _ in range(5):
            store.append("u", "i", "view", context=context_of_size(20_000))
        stats = store.stats()
        assert stats.pending_events == 3
        assert stats.pending_bytes == 60_000
        assert stats.dropped_events == 2
        assert [e.seq for e in store.pending()] == [3, 4, 5]


def test_a_batch_larger_than_the_cap_keeps_its_newest_events(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite", max_pending_events=5) as store:
        logged = store.append_many([NewEvent("u", f"i{n}", "view") for n in range(7)])
        assert [e.seq for e in logged] == list(range(1, 8))
        assert [e.seq for e in store.pending()] == [3, 4, 5, 6, 7]
        assert store.stats().dropped_events == 2


def test_retention_deletes_only_uploaded_events_older_than_n_days(tmp_path: Path) -> None:
    now = time.time()
    with Store.open(tmp_path / "store.sqlite", retention_days=30) as store:
        old, recent, old_pending = store.append_many(
            [
                NewEvent("u", "old", "view", timestamp=now - 40 * DAY),
                NewEvent("u", "recent", "view", timestamp=now - 10 * DAY),
                NewEvent("u", "old-pending", "view", timestamp=now - 100 * DAY),
            ]
        )
        batch = Batch((old, recent))
        assert store.mark_uploaded(batch, now=now) == 2  # applies retention: "old" goes
        remaining = store.export_user("u")["events"]
        assert [e["item_id"] for e in remaining] == ["recent", "old-pending"]
        assert store.apply_retention(now=now) == 0
        assert store.apply_retention(now=now + 25 * DAY) == 1  # "recent" is now 35 days old
        assert [e.item_id for e in store.pending()] == ["old-pending"]  # never deleted
        assert old_pending.seq == 3
        assert store.stats().uploaded_events == 0
        with pytest.raises(ValueError, match="now must be finite"):
            store.apply_retention(now=float("nan"))


def test_retention_runs_when_the_store_opens(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    now = time.time()
    with Store.open(path, retention_days=365) as store:
        store.append("u", "i", "view", timestamp=now - 3 * DAY)
        store.mark_uploaded(store.pending())
        assert store.stats().uploaded_events == 1
    with Store.open(path, retention_days=2) as store:
        assert store.stats().uploaded_events == 0


def test_outbox_totals_match_the_rows_after_every_kind_of_change(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite", max_pending_events=20) as store:
        store.append_many([NewEvent(f"u{n % 3}", "i", "view", context={"n": n}) for n in range(25)])
        store.mark_uploaded(store.pending(max_events=4))
        store.erase_user("u1")
        store.append("u2", "i", "click", context={"x": "y" * 100})
        pending = store.pending(max_events=1000)
        stats = store.stats()
        assert stats.pending_events == len(pending)
        assert stats.pending_bytes == pending.size
        assert stats.dropped_events == 5


def test_recent_events_of_a_user_are_the_last_ones_in_seq_order(store: Store) -> None:
    for n in range(6):
        store.append("ann", f"a{n}", "click", timestamp=time.time() - n)  # time goes back
        store.append("bob", f"b{n}", "view")
    recent = store.recent_events("ann", 3)
    assert [e.item_id for e in recent] == ["a3", "a4", "a5"]  # by seq, not by timestamp
    assert [e.seq for e in recent] == sorted(e.seq for e in recent)
    assert {e.user_id for e in recent} == {"ann"}
    store.mark_uploaded(store.pending(max_events=4))  # uploaded events are still the user's
    assert [e.item_id for e in store.recent_events("ann", 100)] == [f"a{n}" for n in range(6)]
    assert store.recent_events("ann", 0) == []
    assert store.recent_events("nobody", 5) == []
    store.erase_user("ann")
    assert store.recent_events("ann", 5) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ann", -1), "limit must be in"),
        (("ann", 1.5), "limit must be an int"),
        (("", 1), "user_id"),
    ],
)
def test_recent_events_bad_arguments(store: Store, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.recent_events(*args)
