"""Schema version, migrations, refusing newer or foreign files, and the committed v1 fixture."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sqlite3
import uuid
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sqlite_utils

from pocketrec.core import wire
from pocketrec.core.errors import SchemaTooNewError, StorageError
from pocketrec.storage import SCHEMA_VERSION, CatalogItem, Store
from pocketrec.storage.connection import Connections
from pocketrec.storage.schema import APPLICATION_ID, MIGRATIONS, Migration, prepare

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_fixture_script() -> ModuleType:
    """``tests/fixtures/make_storage_v1.py``: the contents the committed fixture was made from."""
    spec = importlib.util.spec_from_file_location(
        "make_storage_v1", FIXTURES / "make_storage_v1.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V1 = load_fixture_script()


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    """A copy of the committed version-1 store (opening migrates it in place)."""
    path = tmp_path / "device.sqlite"
    shutil.copyfile(FIXTURES / "storage_v1.sqlite", path)
    return path


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store.open(path).close()
    db = sqlite_utils.Database(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.journal_mode == "wal"
        tables = {"events", "outbox", "user_state", "catalog", "bundles", "quarantine"}
        assert set(db.table_names()) >= tables
        assert {"status", "failure"} <= set(db["bundles"].columns_dict)
        assert db["events"].columns_dict == {
            "seq": int,
            "event_id": str,
            "user_id": str,
            "item_id": str,
            "event_type": int,
            "ts": float,
            "context": str,
            "size": int,
            "uploaded_at": float,
        }
        indexes = {index.name for name in db.table_names() for index in db[name].indexes}
        assert {"events_pending", "events_uploaded_ts", "events_user"} <= indexes
        assert "bundles_one_active" in indexes
        assert len(db.triggers) == 7
    finally:
        db.close()


def test_events_cannot_be_altered_in_the_file(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        store.append("u", "i", "view")
        store.mark_uploaded(store.pending())
    conn = raw(tmp_path / "s.sqlite")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="events are immutable"):
            conn.execute("UPDATE events SET item_id = 'other'")
        with pytest.raises(sqlite3.IntegrityError, match="an uploaded event cannot be changed"):
            conn.execute("UPDATE events SET uploaded_at = NULL")
    finally:
        conn.close()


def test_a_newer_schema_is_refused_and_the_file_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        store.append("u", "i", "view")
    conn = raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    newer = f"schema version {SCHEMA_VERSION + 1} was written by a newer"
    with pytest.raises(SchemaTooNewError, match=newer) as info:
        Store.open(path)
    assert (info.value.found, info.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert "upgrade pocketrec" in str(info.value)
    assert isinstance(info.value, StorageError)
    assert digest(path) == before


def test_a_newer_rollback_journal_file_is_not_even_switched_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    conn = raw(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = digest(path)
    with pytest.raises(SchemaTooNewError, match="schema version 99"):
        Store.open(path)
    assert digest(path) == before
    conn = raw(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other-app.sqlite"
    conn = raw(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = digest(path)
    with pytest.raises(StorageError, match=r"not a pocketrec store .*tables notes"):
        Store.open(path)
    assert digest(path) == before


def test_the_committed_v1_fixture_opens_migrates_and_reads_back(v1_copy: Path) -> None:
    conn = raw(v1_copy)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    with Store.open(v1_copy, retention_days=365_000) as store:  # keep its 2023 events
        assert store.integrity_check() == "ok"
        assert store.schema_version == SCHEMA_VERSION
        expected = V1.EVENTS
        uploaded = expected[: V1.UPLOADED]
        kept_pending = expected[V1.UPLOADED + V1.DROPPED :]
        stats = store.stats()
        assert stats.dropped_events == V1.DROPPED
        assert (stats.pending_events, stats.uploaded_events) == (len(kept_pending), len(uploaded))
        pending = store.pending()
        assert [(e.user_id, e.item_id, e.event_type, e.timestamp, e.context) for e in pending] == [
            tuple(event) for event in kept_pending
        ]
        everything = [e for u in ("alice", "bob") for e in store.export_user(u)["events"]]
        assert len(everything) == len(uploaded) + len(kept_pending)
        assert all(uuid.UUID(e["event_id"]).version == 4 for e in everything)
        assert sorted(e["uploaded_at"] for e in everything if e["uploaded_at"]) == [
            V1.UPLOADED_AT
        ] * len(uploaded)

        state = store.load_state("alice")
        assert state is not None
        assert state.state.tobytes() == V1.STATE.tobytes()
        assert state.user_vector is not None
        assert state.user_vector.tobytes() == V1.USER_VECTOR.tobytes()
        assert (state.model_version, state.event_count) == (
            V1.STATE_MODEL_VERSION,
            V1.STATE_EVENT_COUNT,
        )

        items: list[CatalogItem] = V1.CATALOG
        assert [store.get_item(item.item_id) for item in items] == items
        ids = [item.item_id for item in items]
        assert store.availability_mask(ids).tolist() == [item.available for item in items]

        assert [(b.model_version, b.path, b.sha256) for b in store.installed_bundles()] == [
            tuple(b) for b in V1.BUNDLES
        ]
        active = store.active_bundle()
        assert active is not None
        assert active.model_version == V1.ACTIVE_BUNDLE

        next_event = store.append("carol", "item-1", "view")
        assert next_event is not None
        assert next_event.seq == len(expected) + 1
    with Store.open(v1_copy) as store:  # default retention: the 2023 uploaded events go
        assert store.stats().uploaded_events == 0
        assert store.stats().pending_events == len(kept_pending) + 1


def add_price_column(db: sqlite_utils.Database) -> None:
    db["catalog"].add_column("price", float)
    db.execute("UPDATE catalog SET price = 1.5")


def test_a_forward_migration_runs_on_the_v1_fixture(v1_copy: Path) -> None:
    migrations: tuple[Migration, ...] = (*MIGRATIONS, add_price_column)
    connections = Connections(
        str(v1_copy), durability="full", busy_timeout=5.0, max_size_bytes=None
    )
    try:
        last = len(migrations)
        assert prepare(connections, migrations) == (1, last)
        assert prepare(connections, migrations) == (last, last)  # nothing left to do
        with connections.read() as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == last
            prices = {row["item_id"]: row["price"] for row in db.query("SELECT * FROM catalog")}
            assert prices == {item.item_id: 1.5 for item in V1.CATALOG}
            events = db.execute("SELECT count(*) FROM events").fetchone()[0]
            assert events == len(V1.EVENTS) - V1.DROPPED
    finally:
        connections.close()
    with pytest.raises(SchemaTooNewError, match=f"schema version {last}"):
        Store.open(v1_copy)  # this build only knows the versions before


def test_a_failing_migration_leaves_the_old_version_intact(v1_copy: Path) -> None:
    def broken(db: sqlite_utils.Database) -> None:
        add_price_column(db)
        raise RuntimeError("migration bug")

    connections = Connections(
        str(v1_copy), durability="full", busy_timeout=5.0, max_size_bytes=None
    )
    try:
        with pytest.raises(RuntimeError, match="migration bug"):
            prepare(connections, (*MIGRATIONS, broken))
    finally:
        connections.close()
    db = sqlite_utils.Database(v1_copy)
    try:
        assert "price" not in db["catalog"].columns_dict
        assert "quarantine" not in db.table_names()  # the earlier steps rolled back too
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        db.close()
    with Store.open(v1_copy, retention_days=365_000) as store:
        assert store.get_item("item-1") == V1.CATALOG[0]


def test_state_vectors_in_the_fixture_are_little_endian_float32(v1_copy: Path) -> None:
    conn = raw(v1_copy)
    blob = conn.execute("SELECT state FROM user_state WHERE user_id = 'alice'").fetchone()[0]
    conn.close()
    assert np.frombuffer(blob, dtype="<f4").tobytes() == V1.STATE.astype("<f4").tobytes()


def test_version_2_recounts_sizes_and_marks_bundles_good(v1_copy: Path) -> None:
    with Store.open(v1_copy, retention_days=365_000) as store:
        pending = store.pending(max_events=100_000, max_bytes=2**30).events
        for event in pending:
            context = None if event.context is None else wire.json_text(event.context)
            assert event.size == wire.event_size(event.user_id, event.item_id, context)
        stats = store.stats()
        assert stats.pending_bytes == sum(event.size for event in pending)
        assert stats.quarantined_events == 0
        assert all(record.good and not record.failure for record in store.installed_bundles())
    conn = raw(v1_copy)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):  # the trigger is back
        conn.execute("UPDATE events SET size = 1")
    conn.close()


def test_an_older_builds_quarantine_file_is_imported_and_removed(v1_copy: Path) -> None:
    with Store.open(v1_copy, retention_days=365_000) as store:
        first, second = store.pending(max_events=2).events
    legacy = Path(f"{v1_copy}-sync")
    conn = raw(legacy)
    conn.execute(
        "CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, status "
        "INTEGER NOT NULL, reason TEXT NOT NULL, quarantined_at REAL NOT NULL)"
    )
    rows = [(first.seq, first.event_id, 422, "HTTP 422: bad", 1.0), (999, "gone", 422, "x", 1.0)]
    conn.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()
    with Store.open(v1_copy, retention_days=365_000) as store:
        assert [(q.seq, q.reason) for q in store.quarantined()] == [(first.seq, "HTTP 422: bad")]
        assert store.pending(max_events=1).events == (second,)
    assert not legacy.exists()
