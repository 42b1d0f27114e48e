"""Opt-out / opt-in, and a user's export and erasure requests."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from pocketrec.storage import Erasure, NewEvent, Store


def test_opt_out_purges_pending_keeps_uploaded_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        store.append_many([NewEvent("u", f"i{n}", "view") for n in range(5)])
        store.mark_uploaded(store.pending(max_events=2))
        store.save_state("u", np.ones(3, np.float32), model_version=1, event_count=5)
        assert store.opt_out() == 3
        stats = store.stats()
        assert (stats.pending_events, stats.uploaded_events, stats.logging_enabled) == (0, 2, False)
        assert stats.dropped_events == 0  # purged events are not counted as dropped
        assert store.append("u", "i", "click") is None
        assert store.append_many([NewEvent("u", "i", "click")]) == []
        assert store.load_state("u") is not None  # on-device personalization is kept
    with Store.open(path) as store:
        assert not store.logging_enabled()
        assert store.append("u", "i", "click") is None
        store.opt_in()
        assert store.logging_enabled()
        event = store.append("u", "i", "click")
        assert event is not None
        assert event.seq == 6
        assert [e.seq for e in store.pending()] == [6]


def test_no_event_is_pending_once_opt_out_returns(store: Store) -> None:
    stop = threading.Event()
    results: list[bool] = []

    def log_continuously() -> None:
        while not stop.is_set():
            results.append(store.append("u", "i", "view") is not None)

    writer = threading.Thread(target=log_continuously)
    writer.start()
    while len(results) < 20:
        stop.wait(0.001)
    store.opt_out()
    after = len(results)
    stop.wait(0.05)
    stop.set()
    writer.join()
    assert store.stats().pending_events == 0
    assert not any(results[after + 1 :])  # at most the call in flight was logged (then purged)
    assert store.pending().events == ()


def test_export_user_holds_everything_about_one_user(store: Store) -> None:
    logged = store.append_many(
        [
            NewEvent("alice", "i1", "view", timestamp=100.0, context={"k": "v"}),
            NewEvent("bob", "i2", "click", timestamp=101.0),
            NewEvent("alice", "i3", "dislike", timestamp=102.0),
        ]
    )
    store.mark_uploaded(store.pending(max_events=1), now=500.0)
    state = np.array([0.5, -1.25], np.float32)
    store.save_state("alice", state, model_version=2, event_count=2, user_vector=state[::-1].copy())
    export = store.export_user("alice")
    assert json.loads(json.dumps(export)) == export
    assert export["format"] == "pocketrec-user-export"
    assert export["format_version"] == 1
    assert export["user_id"] == "alice"
    assert [e["seq"] for e in export["events"]] == [logged[0].seq, logged[2].seq]
    assert export["events"][0] == {
        "event_id": logged[0].event_id,
        "seq": 1,
        "user_id": "alice",
        "item_id": "i1",
        "event_type": "view",
        "timestamp": 100.0,
        "context": {"k": "v"},
        "size": logged[0].size,
        "uploaded_at": 500.0,
    }
    assert export["events"][1]["uploaded_at"] is None
    assert export["state"]["state"] == [0.5, -1.25]
    assert export["state"]["user_vector"] == [-1.25, 0.5]
    assert (export["state"]["model_version"], export["state"]["event_count"]) == (2, 2)
    nobody = store.export_user("nobody")
    assert nobody["events"] == []
    assert nobody["state"] is None


def test_erase_user_deletes_only_that_user(store: Store) -> None:
    store.append_many([NewEvent(u, "i", "view") for u in ("alice", "bob", "alice", "bob")])
    store.mark_uploaded(store.pending(max_events=1))
    store.save_state("alice", np.ones(2, np.float32), model_version=1, event_count=2)
    store.save_state("bob", np.ones(2, np.float32), model_version=1, event_count=2)
    assert store.erase_user("alice") == Erasure(events=2, state=True)
    assert store.export_user("alice")["events"] == []
    assert store.load_state("alice") is None
    assert len(store.export_user("bob")["events"]) == 2
    assert store.load_state("bob") is not None
    stats = store.stats()
    assert (stats.pending_events, stats.uploaded_events) == (2, 0)
    assert store.erase_user("alice") == Erasure(events=0, state=False)
    with pytest.raises(ValueError, match="user_id must not be empty"):
        store.erase_user("")


def test_erased_data_does_not_linger_in_the_files(store: Store) -> None:
    secret = "erase-me-7f3a9c"
    store.append_many(
        [NewEvent(secret, f"item-{n}", "view", context={"note": secret}) for n in range(50)]
    )
    store.save_state(secret, np.ones(4, np.float32), model_version=1, event_count=50)
    store.append("keep-me", "item", "view")
    store.erase_user(secret)
    files = [store.path, Path(f"{store.path}-wal")]
    content = b"".join(path.read_bytes() for path in files if path.exists())
    assert secret.encode() not in content
    assert b"keep-me" in content
