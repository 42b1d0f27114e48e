"""Recommender with a device store (``db=``): every event logged and the state saved in one
transaction, restored bit for bit after a restart, rebuilt by replay for another bundle version,
reset, opt-out and availability, on real bundles and real SQLite files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec import Recommender
from pocketrec.core.errors import StorageError
from pocketrec.core.events import event_code
from pocketrec.storage import CatalogItem, Store

# i00140: not in v2's catalog; "new-item": in no catalog (logged, the vector unchanged)
HISTORY = [
    ("i00003", "click"),
    ("i00010", "view"),
    ("i00007", "dismiss"),
    ("new-item", "click"),
    ("i00004", "purchase"),
    ("i00140", "view"),
    ("i00021", "like"),
    ("i00033", "dislike"),
    ("i00012", "click"),
]
LATER = [("i00050", "click"), ("i00061", "view"), ("i00007", "like"), ("i00070", "dismiss")]


@pytest.fixture(params=["f32", "int8"])
def bundle_dir(request: pytest.FixtureRequest, runtime_bundles: Any) -> Path:
    path: Path = getattr(runtime_bundles, request.param)
    return path


def _observe_all(rec: Recommender, events: list[tuple[str, str]], user: str = "default") -> None:
    for n, (item, event) in enumerate(events):
        rec.observe(item, event, user=user, ts=1_700_000_000 + n, context={"n": n})


def _snapshot(rec: Recommender, user: str = "default") -> dict[str, Any]:
    """Everything a restart must keep: the vector, the demoted query and three rankings."""
    lists = {
        "seen": rec.recommend(30, user=user),
        "all": rec.recommend(30, user=user, exclude_seen=False),
        "only": rec.recommend(5, user=user, only=["i00003", "i00007", "i00033", "i00099"]),
    }
    return {
        "vector": rec.user_vector(user=user),
        "query": rec.ranking(user=user).query,
        **{name: (ids, scores) for name, (ids, scores) in lists.items()},
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("vector", "query"):
            assert a[key].dtype == b[key].dtype == np.float32
            np.testing.assert_array_equal(a[key], b[key])  # bit for bit
        else:
            assert a[key][0] == b[key][0], key
            np.testing.assert_array_equal(a[key][1], b[key][1])


def test_a_restart_resumes_the_same_state(bundle_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "device.sqlite"
    memory = Recommender.open(bundle_dir)  # the same events without a db: the reference
    with Recommender.open(bundle_dir, db=db) as rec:
        for r in (rec, memory):
            _observe_all(r, HISTORY)
            _observe_all(r, HISTORY[:3], user="bob")
        before = _snapshot(rec)
        _assert_same(before, _snapshot(memory))
        assert rec.info()["db"] == str(db)
    with Recommender.open(bundle_dir, db=db) as reopened:
        assert reopened.users() == []  # restored lazily, on a user's first call
        _assert_same(_snapshot(reopened), before)
        _assert_same(_snapshot(reopened, "bob"), _snapshot(memory, "bob"))
        # the event buffer, the consumed/rejected items and the rejections' ages carried over:
        # the next events give what they give without a restart
        for r in (reopened, memory):
            _observe_all(r, LATER)
        _assert_same(_snapshot(reopened), _snapshot(memory))
        assert "i00007" in reopened.recommend(150, exclude_seen=False)[0]  # liked after dismiss


def test_every_observe_logs_the_event_and_saves_the_state(
    runtime_bundles: Any, store: Store
) -> None:
    rec = Recommender.open(runtime_bundles.f32, db=store)
    assert rec.observe("i00003", "click", user="ann", ts=1_700_000_000.5, context={"s": "home"})
    assert not rec.observe("new-item", "dismiss", user="ann", ts=1_700_000_001)
    logged = store.recent_events("ann", 10)
    assert [(e.user_id, e.item_id, e.event_code, e.timestamp, e.context) for e in logged] == [
        ("ann", "i00003", event_code("click"), 1_700_000_000.5, {"s": "home"}),
        ("ann", "new-item", event_code("dismiss"), 1_700_000_001.0, None),  # unknown: logged
    ]
    saved = store.load_state("ann")
    assert saved is not None
    assert (saved.model_version, saved.event_count) == (1, 2)
    assert saved.user_vector is not None
    np.testing.assert_array_equal(saved.user_vector, rec.user_vector(user="ann"))
    assert saved.state.shape == (rec.info()["state_dim"],)
    rec.close()  # a store passed in is the caller's: still open
    assert not store.closed
    assert store.stats().pending_events == 2


def test_a_user_with_only_unknown_items_is_saved_and_restored(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        rec.observe("new-item", "click")
        initial = rec.user_vector()
    with Store.open(db) as store:
        saved = store.load_state("default")
        assert saved is not None
        assert saved.user_vector is None
        assert saved.event_count == 1
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        np.testing.assert_array_equal(rec.user_vector(), initial)
        assert rec.observe("i00003")  # continues from the initial state
        fresh = Recommender.open(runtime_bundles.f32)
        fresh.observe("i00003")
        np.testing.assert_array_equal(rec.user_vector(), fresh.user_vector())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_id": "x" * 600}, "item_id is 600 bytes"),
        ({"context": {"blob": "x" * 40_000}}, "context is"),
        ({"ts": 4e10}, "timestamp must be seconds since the epoch"),
    ],
)
def test_an_event_the_store_refuses_changes_nothing(
    runtime_bundles: Any, store: Store, kwargs: dict[str, Any], message: str
) -> None:
    rec = Recommender.open(runtime_bundles.f32, db=store)
    _observe_all(rec, HISTORY[:3])
    before = _snapshot(rec)
    event = {"item_id": "i00050", "event": "dismiss", **kwargs}
    with pytest.raises(ValueError, match=message):
        rec.observe(event.pop("item_id"), event.pop("event"), **event)
    _assert_same(_snapshot(rec), before)
    saved = store.load_state("default")
    assert saved is not None
    assert saved.event_count == 3
    assert len(store.recent_events("default", 100)) == 3
    rec.observe("i00050", "dismiss")  # and the next event goes on from the same state
    memory = Recommender.open(runtime_bundles.f32)
    _observe_all(memory, HISTORY[:3])
    memory.observe("i00050", "dismiss")
    _assert_same(_snapshot(rec), _snapshot(memory))


def test_a_failed_write_changes_nothing(runtime_bundles: Any, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite")
    rec = Recommender.open(runtime_bundles.f32, db=store)
    rec.observe("i00003")
    before = rec.user_vector()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        rec.observe("i00010")
    np.testing.assert_array_equal(rec.user_vector(), before)
    assert rec.recommend(150, exclude_seen=True)[0].count("i00010") == 1  # not consumed


def test_another_bundle_version_is_rebuilt_by_replay(
    runtime_bundles: Any, tmp_path: Path, replay_vector: Any
) -> None:
    db = tmp_path / "s.sqlite"
    with Recommender.open(runtime_bundles.f32, db=db, recent_events=5) as rec:
        _observe_all(rec, HISTORY)
    with Recommender.open(runtime_bundles.v2, db=db, recent_events=5) as rec:
        expected = replay_vector(runtime_bundles.v2, HISTORY[-5:])  # the last 5 logged events
        np.testing.assert_array_equal(rec.user_vector(), expected)
        fresh = Recommender.open(runtime_bundles.v2, recent_events=5)  # a fresh replay
        _observe_all(fresh, HISTORY)
        fresh.replace_bundle(runtime_bundles.v2)  # same bundle: rebuilt from the last 5 events
        np.testing.assert_array_equal(fresh.user_vector(), expected)
        assert rec.recommend(20)[0] == fresh.recommend(20)[0]
        assert rec.info()["model_version"] == 2
    with Store.open(db) as store:  # saved again with the new version
        saved = store.load_state("default")
        assert saved is not None
        assert (saved.model_version, saved.event_count) == (2, len(HISTORY))
        np.testing.assert_array_equal(saved.user_vector, expected)


def test_replace_bundle_saves_the_rebuilt_states(
    runtime_bundles: Any, tmp_path: Path, replay_vector: Any
) -> None:
    db = tmp_path / "s.sqlite"
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        _observe_all(rec, HISTORY, user="ann")
        _observe_all(rec, HISTORY[:4], user="bob")
        rec.replace_bundle(runtime_bundles.v2)
        after = _snapshot(rec, "ann")
    with Store.open(db) as store:
        for user, events in (("ann", HISTORY), ("bob", HISTORY[:4])):
            saved = store.load_state(user)
            assert saved is not None
            assert saved.model_version == 2
            assert saved.event_count == len(events)
            expected = replay_vector(runtime_bundles.v2, events)
            assert saved.user_vector is not None
            np.testing.assert_array_equal(saved.user_vector, expected)
    with Recommender.open(runtime_bundles.v2, db=db) as rec:
        _assert_same(_snapshot(rec, "ann"), after)


def test_reset_deletes_the_saved_state_and_keeps_the_log(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        rec.observe("i00003", "click")
        rec.observe("i00007", "dismiss")
        rec.reset()
        with Store.open(db) as store:
            assert store.load_state("default") is None
            assert [e.item_id for e in store.recent_events("default", 10)] == ["i00003", "i00007"]
        rec.observe("i00010", "click")
        after_reset = _snapshot(rec)
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        _assert_same(_snapshot(rec), after_reset)  # the events before the reset are not used
        ids = rec.recommend(150)[0]
        assert "i00010" not in ids
        assert "i00003" in ids  # consumed before the reset: forgotten
        assert "i00007" not in ids  # dismissed: never shown again, a reset included
        rec.reset()
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        np.testing.assert_array_equal(
            rec.user_vector(), Recommender.open(runtime_bundles.f32).user_vector()
        )


def test_after_opt_out_nothing_is_logged_and_the_state_is_still_saved(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    with Store.open(db) as store:
        store.opt_out()
        assert not store.logging_enabled()
        rec = Recommender.open(runtime_bundles.f32, db=store)
        memory = Recommender.open(runtime_bundles.f32)
        for r in (rec, memory):
            _observe_all(r, HISTORY)
        _assert_same(_snapshot(rec), _snapshot(memory))  # in memory: as without a db
        assert store.stats().pending_events == 0
        assert store.recent_events("default", 100) == []
        saved = store.load_state("default")
        assert saved is not None
        assert saved.event_count == len(HISTORY)
        with pytest.raises(ValueError, match="item_id is 600 bytes"):  # still checked
            rec.observe("x" * 600)
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        # the vector survives; the consumed/rejected items came from the log, which is empty
        np.testing.assert_array_equal(rec.user_vector(), memory.user_vector())
        assert len(rec.recommend(150)[0]) == 150


def test_availability_comes_from_the_store_and_is_written_to_it(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    with Store.open(db) as store:
        store.update_catalog(
            [
                CatalogItem("i00001", title="One", available=False),
                CatalogItem("i00002", title="Two", metadata={"p": 3}),
                CatalogItem("i00900", available=False),  # not in the bundle: kept by id
            ]
        )
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        assert rec.info()["unavailable"] == 1
        assert "i00001" not in rec.recommend(150, exclude_seen=False)[0]
        rec.set_available(["i00002", "i00005"], False)
        rec.set_available(["i00001"], True)
        ids = rec.recommend(150)[0]
        assert "i00001" in ids
        assert {"i00002", "i00005"}.isdisjoint(ids)
        with pytest.raises(ValueError, match="item_ids"):
            rec.set_available(["x" * 600], False)  # refused by the store: nothing changes
        assert rec.info()["unavailable"] == 2
    with Store.open(db) as store:
        assert store.unavailable_items() == ["i00002", "i00005", "i00900"]
        two = store.get_item("i00002")
        assert two is not None
        assert (two.title, two.metadata) == ("Two", {"p": 3})
    with Recommender.open(runtime_bundles.f32, db=db) as rec:
        assert rec.info()["unavailable"] == 2
        assert {"i00002", "i00005"}.isdisjoint(rec.recommend(150)[0])


def test_a_db_path_is_owned_and_a_store_is_shared(runtime_bundles: Any, tmp_path: Path) -> None:
    rec = Recommender.open(runtime_bundles.f32, db=str(tmp_path / "owned.sqlite"))
    rec.observe("i00003")
    rec.close()
    rec.close()
    with pytest.raises(StorageError, match="closed"):
        rec.observe("i00004")
    assert rec.info()["durability"] == "full"
    closed = Store.open(tmp_path / "shared.sqlite", durability="normal")
    with Recommender.open(runtime_bundles.f32, db=closed) as rec:
        assert rec.info()["durability"] == "normal"
    assert not closed.closed
    closed.close()
    with pytest.raises(ValueError, match="closed store"):
        Recommender.open(runtime_bundles.f32, db=closed)


def test_threads_logging_their_users_lose_nothing(runtime_bundles: Any, store: Store) -> None:
    rec = Recommender.open(runtime_bundles.f32, db=store)
    users = [f"user{n}" for n in range(4)]
    errors: list[BaseException] = []

    def run(user: str) -> None:
        try:
            for item, event in HISTORY * 3:
                rec.observe(item, event, user=user)
                rec.recommend(5, user=user)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert store.stats().pending_events == 4 * 3 * len(HISTORY)
    for user in users:
        saved = store.load_state(user)
        assert saved is not None
        assert saved.event_count == 3 * len(HISTORY)
        np.testing.assert_array_equal(saved.user_vector, rec.user_vector(user=user))
        seqs = [e.seq for e in store.recent_events(user, 1000)]
        assert seqs == sorted(seqs)
        assert len(seqs) == 3 * len(HISTORY)
