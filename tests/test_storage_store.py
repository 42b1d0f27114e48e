"""Opening and closing a store, its settings, and `Store.transaction`."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec.core.errors import PocketrecError, StorageError
from pocketrec.storage import SCHEMA_VERSION, NewEvent, Store


def pragma(store: Store, name: str) -> Any:
    """A pragma as the calling thread's own connection of the store sees it."""
    with store._conns.read() as db:  # the store's connection: pragmas are per connection
        return db.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
def test_durability_sets_wal_and_synchronous(
    tmp_path: Path, durability: Any, synchronous: int
) -> None:
    with Store.open(tmp_path / "s.sqlite", durability=durability) as store:
        assert store.durability == durability
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == synchronous
        assert pragma(store, "secure_delete") == 1


def test_default_durability_is_full(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        assert store.durability == "full"
        assert pragma(store, "synchronous") == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"durability": "fast"}, "durability must be 'full' or 'normal'"),
        ({"max_pending_events": 0}, "max_pending_events must be in 1"),
        ({"max_pending_bytes": 1024}, "max_pending_bytes must be in 32768"),
        ({"retention_days": 0}, "retention_days must be > 0"),
        ({"retention_days": float("nan")}, "retention_days must be finite"),
        ({"max_size_bytes": 1000}, "max_size_bytes must be in 65536"),
        ({"busy_timeout": -1}, "busy_timeout must be >= 0"),
    ],
)
def test_bad_open_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Store.open(tmp_path / "s.sqlite", **kwargs)
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("path", [":memory:", "", 42])
def test_bad_paths(path: Any) -> None:
    with pytest.raises(ValueError, match="path must"):
        Store.open(path)


def test_unopenable_files_raise_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unable to open database file"):
        Store.open(tmp_path / "missing-dir" / "s.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="file is not a database"):
        Store.open(garbage)
    assert issubclass(StorageError, PocketrecError)
    assert issubclass(StorageError, RuntimeError)


def test_close_and_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store.open(path)
    assert repr(store) == f"Store({str(path)!r}, full)"
    assert store.path == path
    store.append("u", "i", "view")
    thread = threading.Thread(target=store.stats)  # a second thread's connection
    thread.start()
    thread.join()
    store.close()
    store.close()  # twice is fine
    assert store.closed
    assert "closed" in repr(store)
    assert not Path(f"{path}-wal").exists()  # every connection closed: WAL checkpointed away
    with pytest.raises(StorageError, match="the store is closed"):
        store.pending()
    with Store.open(path) as reopened:
        assert reopened.stats().pending_events == 1
        assert reopened.schema_version == SCHEMA_VERSION
    assert reopened.closed


def test_integrity_check(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        assert store.integrity_check() == "ok"


def test_transaction_commits_everything_at_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        seen_by_other_thread: list[int] = []
        with store.transaction():
            event = store.append("u", "i", "view")
            store.save_state("u", np.ones(2, np.float32), model_version=1, event_count=1)
            assert event is not None
            assert store.pending().events == (event,)
            reader = threading.Thread(
                target=lambda: seen_by_other_thread.append(store.stats().pending_events)
            )
            reader.start()
            reader.join()
        assert seen_by_other_thread == [0]  # not committed while the block was open
        assert store.stats().pending_events == 1
        assert store.load_state("u") is not None


def test_transaction_rolls_back_on_exception(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        store.append("u", "before", "view")

        def fail_inside_a_transaction() -> None:
            with store.transaction():
                store.append("u", "inside", "view")
                store.save_state("u", np.ones(2, np.float32), model_version=1, event_count=1)
                raise KeyError("boom")

        with pytest.raises(KeyError):
            fail_inside_a_transaction()
        assert [e.item_id for e in store.pending()] == ["before"]
        assert store.load_state("u") is None
        again = store.append("u", "after", "view")
        assert again is not None
        assert again.seq == 2


def test_a_failed_call_inside_a_transaction_is_undone_alone(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        with store.transaction():
            store.append("u", "one", "view")
            store.add_bundle(1, "/a", "a" * 64)
            with pytest.raises(ValueError, match="already installed"):
                store.add_bundle(1, "/b", "b" * 64)
            with pytest.raises(ValueError, match="unknown event type"):
                store.append_many([NewEvent("u", "two", "view"), NewEvent("u", "x", "nope")])
            store.append("u", "three", "view")
        assert [e.item_id for e in store.pending()] == ["one", "three"]
        assert [b.model_version for b in store.installed_bundles()] == [1]


def test_writes_from_another_thread_wait_for_the_transaction(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        order: list[str] = []
        started = threading.Event()

        def other_writer() -> None:
            started.set()
            store.append("u", "other", "view")
            order.append("other")

        with store.transaction():
            store.append("u", "mine", "view")
            thread = threading.Thread(target=other_writer)
            thread.start()
            started.wait()
            thread.join(0.1)
            order.append("mine")
        thread.join()
        assert order == ["mine", "other"]
        assert [e.item_id for e in store.pending()] == ["mine", "other"]


def test_every_thread_gets_its_own_connection(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        connections: list[sqlite3.Connection] = []

        def grab() -> None:
            connections.append(store._conns.handle().conn)

        threads = [threading.Thread(target=grab) for _ in range(3)]
        for thread in threads:
            thread.start()
            thread.join()  # one after the other: ids of dead threads' objects are not reused
        grab()
        grab()
        assert len({id(c) for c in connections[:3]} | {id(connections[3])}) >= 2
        assert connections[3] is connections[4]  # one per thread, reused
