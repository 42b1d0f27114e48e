"""Schema migrations of the server database on both backends: a fresh database, the committed
version-1 SQLite file, a newer schema refused unchanged, a failing step leaving the last complete
version, a foreign database refused, and two processes migrating at once."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BACKENDS, run_in_processes

from pocketrec.core.errors import SchemaTooNewError, StorageError
from pocketrec.server import open_storage
from pocketrec.server.migrations import Step
from pocketrec.server.storage import FeedbackStorage, is_postgres

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1_TOKENS = {"phone": "phone-token-of-the-v1-fixture", "tablet": "tablet-token-of-the-v1-fixture"}
"""The tokens ``tests/fixtures/make_server_v1.py`` registered ("tablet" is revoked)."""


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def default_steps(db: str) -> tuple[Step, ...]:
    if is_postgres(db):
        from pocketrec.server.postgres_schema import STEPS as PG_STEPS

        return PG_STEPS
    from pocketrec.server.storage_sqlite import STEPS as SQLITE_STEPS

    return SQLITE_STEPS


def open_with(db: str, steps: tuple[Step, ...]) -> FeedbackStorage:
    if is_postgres(db):
        from pocketrec.server.storage_postgres import PostgresFeedbackStorage

        return PostgresFeedbackStorage(db, steps=steps)
    from pocketrec.server.storage_sqlite import SqliteFeedbackStorage

    return SqliteFeedbackStorage(db, steps=steps)


def schema_state(db: str) -> object:
    """What a refused open must leave alone: the version and every table (and for SQLite the
    file's bytes)."""
    if is_postgres(db):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('pocketrec_schema') IS NOT NULL").fetchone()
            versions = (
                conn.execute("SELECT version FROM pocketrec_schema ORDER BY 1").fetchall()
                if row is not None and row[0]
                else []
            )
            tables = conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = "
                "current_schema()::regnamespace ORDER BY 1"
            ).fetchall()
        return versions, tables
    return Path(db).read_bytes()


def version_of(db: str) -> int:
    if is_postgres(db):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute("SELECT max(version) FROM pocketrec_schema").fetchone()
        assert row is not None
        return int(row[0])
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def has_table(db: str, name: str) -> bool:
    if is_postgres(db):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        assert row is not None
        return bool(row[0])
    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return found is not None
    finally:
        conn.close()


FUTURE = Step("a newer build's table", ("CREATE TABLE future_things (x integer)",))


def test_a_fresh_database_gets_every_step(server_db: str) -> None:
    storage = open_storage(server_db)
    storage.close()
    assert version_of(server_db) == len(default_steps(server_db))
    again = open_storage(server_db)  # reopening changes nothing
    again.close()
    assert version_of(server_db) == len(default_steps(server_db))


def test_a_newer_schema_is_refused_and_left_unchanged(server_db: str) -> None:
    newer = open_with(server_db, (*default_steps(server_db), FUTURE))
    newer.close()
    before = schema_state(server_db)
    supported = len(default_steps(server_db))
    with pytest.raises(SchemaTooNewError, match=f"schema version {supported + 1} was written"):
        open_storage(server_db)
    assert schema_state(server_db) == before


def test_a_failing_step_leaves_the_last_complete_version(server_db: str) -> None:
    broken = Step("half done", ("CREATE TABLE half_done (x integer)", "SELECT * FROM no_table"))
    with pytest.raises(StorageError, match="no_table"):
        open_with(server_db, (*default_steps(server_db), broken))
    assert version_of(server_db) == len(default_steps(server_db))
    assert not has_table(server_db, "half_done")
    open_storage(server_db).close()  # still opens


def _open_in_child(db: str, barrier: Any) -> None:
    barrier.wait(60)
    open_storage(db).close()


def test_processes_migrating_at_once_migrate_once(server_db: str) -> None:
    run_in_processes(_open_in_child, [(server_db,)] * 3)
    assert version_of(server_db) == len(default_steps(server_db))


def test_the_version_1_sqlite_file_migrates_and_reads_back(tmp_path: Path) -> None:
    db = tmp_path / "server.sqlite"
    shutil.copyfile(FIXTURES / "server_v1.sqlite", db)
    assert version_of(str(db)) == 1
    storage = open_storage(db)
    try:
        assert version_of(str(db)) == len(default_steps(str(db)))
        assert storage.authenticate(V1_TOKENS["phone"]) == "phone"
        assert storage.authenticate(V1_TOKENS["tablet"]) is None  # revoked in version 1
        assert [(d.device_id, d.revoked) for d in storage.devices()] == [
            ("phone", False),
            ("tablet", True),
        ]
        events = list(storage.iter_events())
        assert [e.event_id for e in events] == [
            f"00000000-0000-4000-8000-{k:012d}" for k in range(6)
        ]
        assert [e.context for e in events[:2]] == ['{"screen":"home"}', None]
        assert [e.user_id for e in storage.export_events("phone", "alice")] == ["alice"] * 3
        assert storage.latest_bundle() is None
    finally:
        storage.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x706B7273
    finally:
        conn.close()


def test_a_sqlite_file_that_is_not_a_server_database_is_refused(tmp_path: Path) -> None:
    from pocketrec.storage import Store

    device_store = tmp_path / "device.sqlite"
    Store.open(device_store).close()
    before = device_store.read_bytes()
    with pytest.raises(StorageError, match="not a pocketrec server database"):
        open_storage(device_store)
    assert device_store.read_bytes() == before


def test_a_postgres_schema_that_is_not_ours_is_refused(postgres_schemas: object) -> None:
    import psycopg

    db = postgres_schemas.new()  # type: ignore[attr-defined]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (what text)")
    before = schema_state(db)
    with pytest.raises(StorageError, match="not a pocketrec server schema"):
        open_storage(db)
    assert schema_state(db) == before
