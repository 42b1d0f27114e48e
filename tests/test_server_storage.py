"""The server's storage on both backends (a real SQLite file, a real PostgreSQL schema):
exactly-once intake under concurrent resends, atomic batches, streaming reads, data requests,
retention, tokens and bundles' metadata."""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BACKENDS, database_bytes, run_in_processes

from pocketrec.core.errors import StorageError
from pocketrec.server import BundleRecord, FeedbackStorage, open_storage
from pocketrec.server.validation import EventRecord

DAY = 86_400.0
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z: a received_at in the recent past


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(server_db: str) -> Iterator[FeedbackStorage]:
    opened = open_storage(server_db)
    try:
        yield opened
    finally:
        opened.close()


def make_events(count: int, *, user: str = "alice", start: int = 1) -> list[EventRecord]:
    return [
        EventRecord(str(uuid.uuid4()), start + k, user, f"i{k:05d}", "click", 1_700_000_000.5 + k,
                    '{"screen":"home"}' if k % 2 else None)
        for k in range(count)
    ]  # fmt: skip


def test_a_batch_reads_back_exactly_in_arrival_order(storage: FeedbackStorage) -> None:
    first, second = make_events(3), make_events(4, user="bob", start=4)
    assert storage.insert_events("phone", first) == 3
    assert storage.insert_events("phone", second) == 4
    stored = list(storage.iter_events())
    assert [e.event_id for e in stored] == [e.event_id for e in first + second]
    original = first[1]
    assert stored[1].device_id == "phone"
    assert (stored[1].seq, stored[1].user_id, stored[1].item_id, stored[1].event_type) == (
        original.seq, original.user_id, original.item_id, original.event_type,
    )  # fmt: skip
    assert stored[1].timestamp == original.timestamp  # bit for bit
    assert stored[1].context == original.context
    assert storage.count_events() == 7


def test_repeats_within_a_batch_and_across_batches_are_stored_once(
    storage: FeedbackStorage,
) -> None:
    batch = make_events(5)
    assert storage.insert_events("phone", [*batch, batch[0], batch[3]]) == 5
    assert storage.insert_events("phone", [*batch, *make_events(2, start=6)]) == 2
    assert storage.insert_events("phone", []) == 0
    assert storage.count_events() == 7


def test_concurrent_resends_from_threads_store_each_event_once(
    storage: FeedbackStorage,
) -> None:
    events = make_events(400)
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    new: list[int] = []
    start = threading.Barrier(6)

    def resend(seed: int) -> None:
        order = list(batches)
        random.Random(seed).shuffle(order)
        start.wait()
        for batch in order:
            # overlapping batches in another order each time, each thread on another day (so in
            # another PostgreSQL partition): the guard must serialize them all the same
            resent = [*batch, *random.sample(events, 5)]
            new.append(storage.insert_events("phone", resent, received_at=T0 + seed * DAY))

    threads = [threading.Thread(target=resend, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(new) == 400
    stored = [e.event_id for e in storage.iter_events()]
    assert sorted(stored) == sorted(e.event_id for e in events)


def _resend_in_child(db: str, events: list[EventRecord], seed: int, barrier: Any) -> int:
    storage = open_storage(db)
    try:
        order = [events[i : i + 50] for i in range(0, len(events), 50)]
        random.Random(seed).shuffle(order)
        barrier.wait(60)
        return sum(storage.insert_events("phone", batch) for batch in order)
    finally:
        storage.close()


def test_concurrent_resends_from_processes_store_each_event_once(
    storage: FeedbackStorage, server_db: str
) -> None:
    events = make_events(600)
    totals = run_in_processes(_resend_in_child, [(server_db, events, seed) for seed in range(3)])
    assert sum(totals) == 600  # each event was new for exactly one process
    assert storage.count_events() == 600
    assert len({e.event_id for e in storage.iter_events()}) == 600


def test_a_batch_that_fails_midway_stores_nothing(storage: FeedbackStorage) -> None:
    good = make_events(10)
    bad = EventRecord(str(uuid.uuid4()), 2**63, "alice", "i9", "click", 1.0, None)  # no int64
    with pytest.raises((StorageError, OverflowError)):
        storage.insert_events("phone", [*good[:6], bad, *good[6:]])
    assert storage.count_events() == 0
    assert list(storage.iter_events()) == []
    assert storage.insert_events("phone", good) == 10  # no id was left claimed


def test_iteration_reads_one_snapshot_while_inserts_go_on(storage: FeedbackStorage) -> None:
    storage.insert_events("phone", make_events(2500))
    events = storage.iter_events()
    first = next(events)
    assert storage.insert_events("phone", make_events(10, start=3000)) == 10  # not blocked
    rest = list(events)
    assert 1 + len(rest) == 2500
    assert first.seq == 1
    assert storage.count_events() == 2510


def test_an_abandoned_iterator_releases_its_connection(storage: FeedbackStorage) -> None:
    storage.insert_events("phone", make_events(30))
    for _ in range(25):  # more than the pool holds
        events = storage.iter_events()
        next(events)
        events.close()
    assert storage.count_events() == 30


def test_export_and_erase_per_device_and_per_user(storage: FeedbackStorage) -> None:
    phone_alice, phone_bob = make_events(3), make_events(2, user="bob", start=4)
    tablet_alice = make_events(4, start=10)
    storage.insert_events("phone", phone_alice[:2])
    storage.insert_events("tablet", tablet_alice)
    storage.insert_events("phone", [*phone_bob, phone_alice[2]])

    def ids(events: Iterator[object]) -> list[str]:
        return [e.event_id for e in events]  # type: ignore[attr-defined]

    assert ids(storage.export_events("phone")) == ids(iter([*phone_alice[:2], *phone_bob,
                                                            phone_alice[2]]))  # fmt: skip
    assert ids(storage.export_events("phone", "alice")) == ids(iter(phone_alice))
    assert ids(storage.export_events("phone", "carol")) == []
    assert storage.erase_events("phone", "alice") == 3
    assert ids(storage.export_events("phone")) == ids(iter(phone_bob))
    assert storage.erase_events("tablet") == 4
    assert storage.erase_events("tablet") == 0
    assert ids(storage.iter_events()) == ids(iter(phone_bob))
    # an erased event's id is forgotten with it: a later resend is stored again
    assert storage.insert_events("phone", phone_alice) == 3


def test_retention_drops_what_was_received_before_the_cutoff(storage: FeedbackStorage) -> None:
    days = [make_events(3, start=10 * d + 1) for d in range(5)]
    for d, batch in enumerate(days):
        assert storage.insert_events("phone", batch, received_at=T0 + d * DAY) == 3
    result = storage.drop_events_before(T0 + 2 * DAY + 1.0)
    assert result.events == 9  # days 0, 1 and 2
    assert storage.count_events() == 6
    assert [e.event_id for e in storage.iter_events()] == [e.event_id for e in days[3] + days[4]]
    assert storage.drop_events_before(T0 + 2 * DAY + 1.0).events == 0
    # within retention a resend is a duplicate; past it, the id is forgotten: stored again
    assert storage.insert_events("phone", days[3]) == 0
    assert storage.insert_events("phone", days[0]) == 3


def test_tokens_are_stored_only_as_their_sha256(storage: FeedbackStorage, server_db: str) -> None:
    token = storage.add_device("phone")
    assert storage.authenticate(token) == "phone"
    assert storage.authenticate(token + "x") is None
    stored = database_bytes(server_db)
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert token.encode() not in stored
    again = storage.add_device("phone")  # re-issued: the old token stops working
    assert storage.authenticate(token) is None
    assert storage.authenticate(again) == "phone"
    assert storage.revoke_device("phone")
    assert storage.authenticate(again) is None
    assert not storage.revoke_device("nobody")
    (device,) = storage.devices()
    assert (device.device_id, device.revoked) == ("phone", True)
    assert device.revoked_at is not None
    assert device.revoked_at >= device.created_at


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "x" * 201, 42])
def test_a_bad_device_id_is_refused(storage: FeedbackStorage, bad: object) -> None:
    with pytest.raises(ValueError, match="device id"):
        storage.add_device(bad)  # type: ignore[arg-type]
    assert storage.devices() == []


def test_bundle_versions_only_go_up(storage: FeedbackStorage) -> None:
    assert storage.latest_bundle() is None
    first = BundleRecord(3, "a" * 64, bytes(range(64)), 1_700_000_000.25)
    storage.record_bundle(first)
    assert storage.bundle(3) == first
    assert storage.latest_bundle() == first
    for version in (3, 2):
        with pytest.raises(ValueError, match="only go up"):
            storage.record_bundle(BundleRecord(version, "b" * 64, b"s" * 64, 1.0))
    storage.record_bundle(BundleRecord(10, "c" * 64, b"t" * 64, 1_700_000_100.0))
    assert storage.latest_bundle() == BundleRecord(10, "c" * 64, b"t" * 64, 1_700_000_100.0)
    assert storage.bundle(3) == first
    assert storage.bundle(4) is None


def test_ping_answers_until_closed(server_db: str) -> None:
    storage = open_storage(server_db)
    storage.ping()
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(StorageError):
        storage.ping()


def test_a_folder_published_before_the_database_kept_bundles_is_adopted(
    storage: FeedbackStorage, tmp_path: Path
) -> None:
    from conftest import BUNDLE_FIXTURE, bundle_version

    from pocketrec.server import BundleRepository
    from pocketrec.server.signing import generate_key, load_private_key

    generate_key(tmp_path / "key")
    key = load_private_key(tmp_path / "key")
    folder = tmp_path / "published"
    # an earlier release's folder: versions 2 and 5 published, LATEST = 5, and version 7 copied
    # by a publish that crashed before LATEST named it
    scratch = open_storage(str(tmp_path / "scratch.sqlite"))
    try:
        old = BundleRepository(folder, scratch)
        for version in (2, 5, 7):
            old.publish(bundle_version(BUNDLE_FIXTURE, tmp_path / f"b{version}", version), key)
    finally:
        scratch.close()
    (folder / "LATEST").write_text("5\n")

    adopted = BundleRepository(folder, storage)
    assert adopted.latest_version() == 5
    latest = adopted.latest()
    assert latest is not None
    assert latest.manifest == (folder / "versions" / "5" / "manifest.json").read_bytes()
    assert latest.signature == (folder / "versions" / "5" / "manifest.sig").read_bytes()
    assert adopted.get(2) is not None
    assert adopted.get(7) is None  # never published
    assert adopted.file_path(7, "manifest.json") is None
    record = storage.latest_bundle()
    BundleRepository(folder, storage)  # adopting again changes nothing
    assert storage.latest_bundle() == record
