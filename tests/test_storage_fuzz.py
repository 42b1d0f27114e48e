"""Fuzzed bad input (hypothesis): rejected with ValueError, or stored verbatim; never executed as
SQL, never changing what was stored before, never corrupting the file."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketrec.storage import CatalogItem, Event, NewEvent, Store

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SQL = st.sampled_from(
    [
        "'; DROP TABLE events; --",
        '" OR 1=1 --',
        "x'); DELETE FROM outbox; --",
        "Robert'); DROP TABLE user_state;--",
        "%s %d ?1 :name @x $y",
        "\\x00",
    ]
)


def mostly(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times out of four, so that whole calls are often valid and get stored."""
    return st.integers(0, 3).flatmap(lambda k: bad if k == 0 else valid)


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.sets(st.integers(), max_size=2),
    st.tuples(st.integers()),
)
GOOD_TEXT = st.one_of(
    st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40), SQL
)
BAD_TEXT = st.one_of(
    st.just(""),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # not encodable as UTF-8
    st.text(min_size=513, max_size=600).filter(lambda t: len(t.encode("utf-8", "replace")) > 512),
    st.just("a\x00b"),
    ANYTHING,
)
IDS = mostly(GOOD_TEXT, BAD_TEXT)
GOOD_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        GOOD_TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(GOOD_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
GOOD_OBJECT = st.dictionaries(GOOD_TEXT, GOOD_JSON, max_size=5)
BAD_OBJECT = st.one_of(
    ANYTHING,
    st.builds(lambda v: {"x": v}, st.sampled_from([float("nan"), float("inf"), {1, 2}, b"b"])),
    st.builds(lambda k: {k: 1}, st.integers()),
    st.builds(lambda n: {"pad": "x" * n}, st.integers(30_000, 40_000)),  # around the 32 KiB limit
)
GOOD_TYPES = st.one_of(st.sampled_from(["view", "click", " LIKE ", "Dismiss"]), st.integers(0, 5))
GOOD_TIMES = st.one_of(st.none(), st.floats(0, 4e9), st.integers(0, 4_000_000_000))
CONTEXTS = mostly(st.one_of(st.none(), GOOD_OBJECT), BAD_OBJECT)
EVENT_TYPES = mostly(
    GOOD_TYPES,
    st.one_of(st.sampled_from(["share", ""]), st.integers(-3, -1), st.integers(6, 9), ANYTHING),
)
TIMESTAMPS = mostly(
    GOOD_TIMES,
    st.one_of(st.floats(allow_nan=True).filter(lambda x: not 0 <= x <= 3.25e10), ANYTHING),
)
GOOD_EVENTS = st.builds(NewEvent, GOOD_TEXT, GOOD_TEXT, GOOD_TYPES, GOOD_TIMES, GOOD_OBJECT)
VERSIONS = mostly(
    st.integers(0, 2**63 - 1),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63), ANYTHING),
)
VECTORS = mostly(
    hnp.arrays(
        st.sampled_from([np.dtype(np.float32), np.dtype(">f4")]),
        st.integers(1, 64),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    st.one_of(
        hnp.arrays(
            st.sampled_from([np.float32, np.float64, np.int32, np.float16]),
            hnp.array_shapes(min_dims=0, max_dims=2, max_side=6),
        ),
        ANYTHING,
    ),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("fuzz") / "store.sqlite"
    with Store.open(path, durability="normal") as opened:
        opened.save_state(
            "seed-user", np.arange(3, dtype=np.float32), model_version=1, event_count=1
        )
        opened.update_catalog([CatalogItem("seed-item", "kept")])
        yield opened
        assert opened.integrity_check() == "ok"


def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything a rejected call must leave unchanged."""
    state = store.load_state("seed-user")
    assert state is not None
    assert state.state.tolist() == [0.0, 1.0, 2.0]
    return (
        store.pending(max_events=100_000, max_bytes=2**31),
        store.stats(),
        store.get_item("seed-item"),
        store.catalog_size(),
    )


def upload_all(store: Store) -> tuple[Event, ...]:
    """Acknowledge every pending event (keeps the outbox small); returns them."""
    batch = store.pending(max_events=100_000, max_bytes=2**31)
    assert store.mark_uploaded(batch) == len(batch)
    return batch.events


def same_number(stored: float, given: Any) -> bool:
    return isinstance(stored, float) and math.isfinite(stored) and stored == float(given)


@FUZZ
@given(user=IDS, item=IDS, event_type=EVENT_TYPES, timestamp=TIMESTAMPS, context=CONTEXTS)
def test_fuzzed_append(
    store: Store, user: Any, item: Any, event_type: Any, timestamp: Any, context: Any
) -> None:
    before = snapshot(store)
    try:
        event = store.append(user, item, event_type, timestamp=timestamp, context=context)
    except ValueError:
        tally("rejected")
        assert snapshot(store) == before
        return
    tally("stored")
    assert event is not None
    (stored,) = upload_all(store)
    assert stored == event
    assert (stored.user_id, stored.item_id) == (user, item)  # verbatim, SQL-looking or not
    assert stored.context == context
    if timestamp is not None:
        assert same_number(stored.timestamp, timestamp)
    assert store.stats().dropped_events == before[1].dropped_events


@FUZZ
@given(
    events=st.lists(
        mostly(
            GOOD_EVENTS,
            st.one_of(st.builds(NewEvent, IDS, IDS, EVENT_TYPES, TIMESTAMPS, CONTEXTS), ANYTHING),
        ),
        max_size=4,
    )
)
def test_fuzzed_batches_are_all_or_nothing(store: Store, events: list[Any]) -> None:
    before = snapshot(store)
    try:
        logged = store.append_many(events)
    except ValueError:
        tally("rejected")
        assert snapshot(store) == before
        return
    tally("stored")
    assert len(logged) == len(events)
    assert upload_all(store) == tuple(logged)


@FUZZ
@given(
    vector=VECTORS,
    model_version=VERSIONS,
    event_count=VERSIONS,
)
def test_fuzzed_state(store: Store, vector: Any, model_version: Any, event_count: Any) -> None:
    before = snapshot(store)
    try:
        store.save_state("fuzz-user", vector, model_version=model_version, event_count=event_count)
    except ValueError:
        tally("rejected")
        assert snapshot(store) == before
        return
    tally("stored")
    loaded = store.load_state("fuzz-user")
    assert loaded is not None
    assert loaded.state.tobytes() == vector.astype(np.float32).tobytes()
    assert (loaded.model_version, loaded.event_count) == (model_version, event_count)


@FUZZ
@given(
    items=st.lists(
        mostly(
            st.builds(
                CatalogItem,
                GOOD_TEXT,
                st.one_of(st.none(), GOOD_TEXT),
                st.one_of(st.none(), GOOD_OBJECT),
                st.booleans(),
                GOOD_TIMES,
            ),
            st.one_of(
                st.builds(
                    CatalogItem,
                    IDS,
                    mostly(st.one_of(st.none(), GOOD_TEXT), BAD_TEXT),
                    mostly(st.one_of(st.none(), GOOD_OBJECT), BAD_OBJECT),
                    mostly(st.booleans(), ANYTHING),
                    TIMESTAMPS,
                ),
                ANYTHING,
            ),
        ),
        max_size=4,
    ),
    remove=st.lists(mostly(GOOD_TEXT, BAD_TEXT), max_size=2),
)
def test_fuzzed_catalog_updates(store: Store, items: list[Any], remove: list[Any]) -> None:
    before = snapshot(store)
    if any(isinstance(x, CatalogItem) and x.item_id == "seed-item" for x in items) or (
        "seed-item" in remove
    ):
        return  # the seed item is the witness that nothing changed
    try:
        store.update_catalog(items, remove=remove)
    except ValueError:
        tally("rejected")
        assert snapshot(store) == before
        return
    tally("stored")
    for item in items:
        stored = store.get_item(item.item_id)
        assert stored is not None
        assert (stored.title, stored.metadata, stored.available) == (
            item.title,
            item.metadata,
            item.available,
        )


@FUZZ
@given(user=IDS)
def test_fuzzed_user_requests(store: Store, user: Any) -> None:
    try:
        export = store.export_user(user)
    except ValueError:
        return
    assert export["user_id"] == user
    if user != "seed-user":
        before = snapshot(store)
        erased = store.erase_user(user)
        assert erased.events == len(export["events"])
        assert snapshot(store)[2:] == before[2:]
