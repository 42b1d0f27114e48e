"""What only the PostgreSQL backend has: day partitions made ahead and on demand (also by two
processes at once), retention by whole partitions without blocking intake, recovery of an
interrupted retention, COPY intake, a clear error for an unreachable database, and `pocketrec
serve --db postgresql://…`."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import PostgresSchemas, run_in_processes

from pocketrec.cli import main
from pocketrec.core.errors import StorageError
from pocketrec.runtime.sync.http import HttpClient, NetworkError
from pocketrec.server.postgres_schema import day_start, partition_name
from pocketrec.server.storage import StorageUnavailableError
from pocketrec.server.storage_postgres import Intake, PostgresFeedbackStorage
from pocketrec.server.validation import EventRecord

DAY = dt.timedelta(days=1)


@pytest.fixture
def dsn(postgres_schemas: PostgresSchemas) -> str:
    return postgres_schemas.new()


@pytest.fixture
def storage(dsn: str) -> Iterator[PostgresFeedbackStorage]:
    opened = PostgresFeedbackStorage(dsn)
    try:
        yield opened
    finally:
        opened.close()


def make_events(count: int) -> list[EventRecord]:
    return [
        EventRecord(str(uuid.uuid4()), k + 1, "alice", f"i{k}", "view", 1.7e9 + k, None)
        for k in range(count)
    ]


def db_today(dsn: str) -> dt.date:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query.encode(), params or None)
        return cursor.fetchall() if cursor.description else []


def test_day_partitions_are_made_ahead(dsn: str) -> None:
    storage = PostgresFeedbackStorage(dsn, ahead_days=3)
    try:
        today = db_today(dsn)
        expected = [partition_name(today + k * DAY) for k in range(-1, 4)]
        assert storage.partitions() == expected
        assert storage.ensure_partitions() == 0  # idempotent
    finally:
        storage.close()


def test_a_missing_partition_is_made_on_demand(storage: PostgresFeedbackStorage, dsn: str) -> None:
    today = partition_name(db_today(dsn))
    sql(dsn, f"DROP TABLE {today}")  # empty; the storage still believes it exists
    assert storage.insert_events("phone", make_events(4)) == 4
    assert today in storage.partitions()
    far = day_start(dt.date(2031, 7, 4)).timestamp() + 3600
    assert storage.insert_events("phone", make_events(2), received_at=far) == 2
    assert "events_p20310704" in storage.partitions()
    assert storage.count_events() == 6


def _race_in_child(dsn: str, rounds: int, barrier: Any) -> tuple[int, int]:
    storage = PostgresFeedbackStorage(dsn, ahead_days=1)
    try:
        created = new = 0
        for r in range(rounds):
            first = dt.date(2040, 1, 1) + r * 10 * DAY
            barrier.wait(60)
            created += storage.ensure_partitions(first, first + 4 * DAY)
            barrier.wait(60)
            # the insert path: a day nobody made yet, from both processes at once
            at = day_start(first + 7 * DAY).timestamp() + 60
            new += storage.insert_events("phone", make_events(5), received_at=at)
        return created, new
    finally:
        storage.close()


def test_two_processes_making_the_same_partitions_do_not_race(
    storage: PostgresFeedbackStorage, dsn: str
) -> None:
    rounds = 8
    results = run_in_processes(_race_in_child, [(dsn, rounds)] * 2)
    assert sum(created for created, _new in results) == rounds * 5  # each made once
    assert sum(new for _created, new in results) == rounds * 2 * 5
    names = storage.partitions()
    for r in range(rounds):
        first = dt.date(2040, 1, 1) + r * 10 * DAY
        for k in (0, 1, 2, 3, 4, 7):
            assert partition_name(first + k * DAY) in names


def test_retention_drops_whole_partitions_and_trims_the_boundary(
    storage: PostgresFeedbackStorage, dsn: str
) -> None:
    d0 = dt.date(2026, 3, 1)
    sent = {}
    for k in range(4):
        for hour in (3, 15):
            events = make_events(2)
            at = day_start(d0 + k * DAY).timestamp() + hour * 3600
            assert storage.insert_events("phone", events, received_at=at) == 2
            sent[(k, hour)] = events
    cutoff = day_start(d0 + 2 * DAY).timestamp() + 12 * 3600  # day 2, noon
    result = storage.drop_events_before(cutoff)
    assert (result.events, result.partitions) == (2 * 2 + 2 * 2 + 2, 2)
    names = storage.partitions()
    assert partition_name(d0) not in names
    assert partition_name(d0 + DAY) not in names
    assert partition_name(d0 + 2 * DAY) in names
    kept = [sent[(2, 15)], sent[(3, 3)], sent[(3, 15)]]
    assert [e.event_id for e in storage.iter_events()] == [e.event_id for b in kept for e in b]
    # the guard forgot exactly the dropped ids
    assert sql(dsn, "SELECT count(*) FROM event_ids") == [(6,)]
    assert not sql(dsn, f"SELECT 1 FROM pg_class WHERE relname = '{partition_name(d0)}'")


def test_retention_waits_for_an_export_but_intake_does_not_wait(
    storage: PostgresFeedbackStorage, dsn: str
) -> None:
    old = day_start(dt.date(2026, 2, 1)).timestamp() + 60
    storage.insert_events("phone", make_events(3), received_at=old)
    storage.insert_events("phone", make_events(3))
    export = storage.iter_events()
    next(export)  # an export is reading events: its snapshot holds the old partition
    done: list[object] = []
    retention = threading.Thread(
        target=lambda: done.append(storage.drop_events_before(old + 86400))
    )
    retention.start()
    try:
        deadline = time.monotonic() + 30
        while not sql(
            dsn,
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE events DETACH%' "
            "AND wait_event_type = 'Lock'",
        ):
            assert time.monotonic() < deadline, "the detach never started waiting"
            time.sleep(0.05)
        inserted: list[int] = []
        intake = threading.Thread(target=lambda: inserted.append(
            storage.insert_events("phone", make_events(5))))  # fmt: skip
        intake.start()
        intake.join(30)
        assert inserted == [5]  # stored while the detach waits for the export
        assert not done
    finally:
        export.close()
        retention.join(60)
    (result,) = done
    assert (result.events, result.partitions) == (3, 1)  # type: ignore[attr-defined]
    assert storage.count_events() == 8


def test_a_partition_detached_by_an_interrupted_run_is_dropped_next_time(
    storage: PostgresFeedbackStorage, dsn: str
) -> None:
    day = dt.date(2026, 1, 10)
    storage.insert_events("phone", make_events(4), received_at=day_start(day).timestamp() + 5)
    sql(dsn, f"ALTER TABLE events DETACH PARTITION {partition_name(day)}")  # then a crash
    assert storage.count_events() == 0
    result = storage.drop_events_before(day_start(day + DAY).timestamp())
    assert (result.events, result.partitions) == (4, 1)
    assert not sql(dsn, f"SELECT 1 FROM pg_class WHERE relname = '{partition_name(day)}'")


@pytest.mark.parametrize("intake", ["copy", "json", "unnest"])
def test_each_intake_is_exactly_once_atomic_and_exact(dsn: str, intake: Intake) -> None:
    storage = PostgresFeedbackStorage(dsn, intake=intake, max_connections=2)
    try:
        events = make_events(30)
        odd = EventRecord(str(uuid.uuid4()), None, 'u\u00e9"\\ \U0001f600', "i", "like",
                          5e-324, '{"a":"\\u0000 \\"x\\""}')  # fmt: skip
        assert storage.insert_events("phone", [odd]) == 1
        [stored] = list(storage.iter_events())
        assert (stored.seq, stored.user_id, stored.timestamp, stored.context) == (
            odd.seq, odd.user_id, odd.timestamp, odd.context,
        )  # fmt: skip
        storage.erase_events("phone")
        assert storage.insert_events("phone", [*events, events[0]]) == 30
        assert storage.insert_events("phone", events) == 0
        bad = EventRecord(str(uuid.uuid4()), 2**63, "alice", "x", "view", 1.0, None)
        fresh = make_events(5)
        with pytest.raises(StorageError):
            storage.insert_events("phone", [*fresh[:2], bad, *fresh[2:]])
        assert storage.count_events() == 30
        assert storage.insert_events("phone", fresh) == 5
        assert [e.event_id for e in storage.iter_events()] == [e.event_id for e in events + fresh]
    finally:
        storage.close()


def test_batches_queued_meanwhile_share_one_statement_and_a_bad_one_fails_alone(
    storage: PostgresFeedbackStorage, dsn: str
) -> None:
    """Issue 13: the intake thread's group commit. A transaction of another connection holds
    the lock of one event id, so the first batch's statement waits for it and every batch
    submitted meanwhile queues; they then go as one group: ids shared between batches count
    once (for the earlier batch), a batch PostgreSQL refuses fails alone, the others commit."""
    held = make_events(1)
    batches = [make_events(4) for _ in range(20)]
    batches[7] = [*batches[6][:2], *make_events(2)]  # two ids of the batch before it
    bad = [*make_events(2), EventRecord(str(uuid.uuid4()), 2**63, "a", "x", "view", 1.0, None)]
    with psycopg.connect(dsn) as blocker:  # not autocommit: its insert holds the id's lock
        blocker.execute(
            "INSERT INTO event_ids (event_id, received_at) VALUES (%s, now())",
            (held[0].event_id,),
        )
        first = storage.submit_events("phone-0", held)
        deadline = time.monotonic() + 30
        while not sql(dsn, "SELECT 1 FROM pg_locks WHERE NOT granted"):
            assert time.monotonic() < deadline, "the first statement never waited for the lock"
            time.sleep(0.01)
        groups = storage.committer.groups
        futures = [storage.submit_events(f"phone-{k}", batch) for k, batch in enumerate(batches, 1)]
        refused = storage.submit_events("phone-bad", bad)
        assert not first.done()  # still waiting: everything since is queued behind it
        blocker.rollback()
    assert first.result(timeout=30) == 1
    assert [f.result(timeout=30) for f in futures] == [4] * 7 + [2] + [4] * 12
    with pytest.raises(StorageError):
        refused.result(timeout=30)
    assert storage.committer.groups == groups + 1  # the 21 queued batches: one group
    assert storage.committer.largest_group == 21
    stored = [(e.device_id, e.event_id) for e in storage.iter_events()]
    expected = [("phone-0", held[0].event_id)] + [
        (f"phone-{k}", e.event_id)
        for k, batch in enumerate(batches, 1)
        for e in (batch[2:] if k == 8 else batch)
    ]
    assert stored == expected


def test_an_unreachable_database_fails_fast_without_showing_the_password(tmp_path: Any) -> None:
    dsn = f"postgresql://pocketrec:s3cret@/pocketrec?host={tmp_path}"
    with pytest.raises(StorageUnavailableError) as info:
        PostgresFeedbackStorage(dsn, timeout=2)
    assert f"postgresql database pocketrec on {tmp_path}" in str(info.value)
    assert "s3cret" not in str(info.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_cli_serves_and_manages_a_postgres_database(
    dsn: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["device", "add", "--db", dsn, "phone"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["device", "add", "--db", dsn, "tablet"]) == 0
    assert main(["device", "revoke", "--db", dsn, "tablet"]) == 0
    capsys.readouterr()
    assert main(["device", "list", "--db", dsn]) == 0
    listed = [line.split("\t")[:2] for line in capsys.readouterr().out.splitlines()]
    assert listed == [["phone", "active"], ["tablet", "revoked"]]
    port = free_port()
    (tmp_path / "published").mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "pocketrec", "serve", "--db", dsn, "--bundles",
         str(tmp_path / "published"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = HttpClient(f"http://127.0.0.1:{port}", token)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.request("GET", "/v1/health").status == 200:
                    break
            except NetworkError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        body = {"events": [{"event_id": str(uuid.uuid4()), "user_id": "alice", "item_id": "i1",
                            "event_type": "click", "timestamp": 1.7e9}]}  # fmt: skip
        reply = client.post_json("/v1/events", json.dumps(body).encode())
        assert (reply.status, json.loads(reply.body)["new"]) == (200, 1)
    finally:
        server.terminate()
        server.wait(30)
    out = tmp_path / "feedback.csv"
    assert main(["export-feedback", "--db", dsn, "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("phone/alice,i1,")


def test_a_lost_database_connection_is_a_503_then_intake_resumes(dsn: str, tmp_path: Any) -> None:
    from conftest import SyncHarness

    harness = SyncHarness(tmp_path / "server", dsn)
    harness.server.start()
    try:
        client = HttpClient(harness.url, harness.add_device("phone"))

        def post(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
            reply = client.post_json("/v1/events", json.dumps({"events": events}).encode())
            return reply.status, json.loads(reply.body)

        def event() -> dict[str, Any]:
            return {"event_id": str(uuid.uuid4()), "user_id": "alice", "item_id": "i1",
                    "event_type": "click", "timestamp": 1.7e9}  # fmt: skip

        first = [event()]
        assert post(first)[0] == 200
        # what a PostgreSQL restart does to the server's pooled connections
        killed = sql(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pocketrec-server' AND pid <> pg_backend_pid()",
        )
        assert killed
        batch = [*first, event()]
        replies = [post(batch)]
        while replies[-1][0] != 200 and len(replies) < 12:  # the pool replaces dead connections
            replies.append(post(batch))
        status, body = replies[0]
        assert (status, body["error"]) == (503, "unavailable")
        assert replies[-1] == (200, {"received": 2, "new": 1, "duplicates": 1})
        assert {status for status, _ in replies} == {503, 200}
        assert len(set(harness.event_ids())) == len(harness.event_ids()) == 2
    finally:
        harness.server.stop()
