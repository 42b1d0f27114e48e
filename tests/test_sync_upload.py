"""Uploading the outbox against a real server: ordering, exactly-once storage despite lost
replies, the retry schedule under faults, 413 splits, quarantine, and offline behaviour."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from conftest import SyncHarness

from pocketrec.runtime.sync import SyncClient, SyncReport
from pocketrec.runtime.sync.policy import RetryPolicy, parse_retry_after, retryable_status
from pocketrec.server import Fault
from pocketrec.storage import NewEvent, Store


class FakeSleep:
    """Records the waits instead of sleeping; ``then`` runs after the ``at``-th wait."""

    def __init__(self, at: int = 0, then: object = None) -> None:
        self.waits: list[float] = []
        self._at, self._then = at, then

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) == self._at and callable(self._then):
            self._then()


def fill(store: Store, count: int, *, context_bytes: int = 0) -> None:
    context = {"pad": "x" * context_bytes} if context_bytes else None
    store.append_many(
        NewEvent("u1", f"i{k:05d}", "click", timestamp=1_700_000_000.0 + k, context=context)
        for k in range(count)
    )


def client(
    store: Store, server: SyncHarness, *, sleep: FakeSleep, timeout: float = 2.0, **options: object
) -> SyncClient:
    token = server.add_device("phone")
    return SyncClient(
        store, server.url, token, sleep=sleep, timeout=timeout, rng=random.Random(0), **options
    )  # type: ignore[arg-type]


def test_pending_batches_go_up_in_order_and_are_marked_after_the_ack(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 23)
    expected = [e.event_id for e in store.pending(max_events=100).events]
    report = client(store, sync_server, sleep=FakeSleep(), batch_events=5).run()
    assert report.ok
    assert (report.upload.uploaded, report.upload.batches, report.upload.pending) == (23, 5, 0)
    assert report.upload.new_on_server == 23
    assert sync_server.event_ids() == expected  # arrival order is seq order
    assert store.stats().pending_events == 0
    assert report.waits == []


def test_a_lost_reply_means_a_resend_and_each_event_is_stored_once(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 12)
    # the server commits the first batch, then hangs past the client's timeout: reply lost
    sync_server.faults.add(Fault(delay=1.5, after_commit=True))
    sleep = FakeSleep()
    report = client(store, sync_server, sleep=sleep, timeout=0.4, batch_events=6).run()
    assert report.ok
    assert report.upload.uploaded == 12
    assert report.upload.new_on_server == 6  # the resent batch held only duplicates
    assert len(sleep.waits) == 1
    ids = sync_server.event_ids()
    assert len(ids) == len(set(ids)) == 12
    assert sync_server.faults.requests == 3


def test_the_schedule_follows_the_policy_under_500_503_429_and_a_hang(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 4)
    sync_server.faults.add(
        Fault(status=500),
        Fault(status=503),
        Fault(status=429, retry_after="7"),
        Fault(delay=1.5),  # hangs past the timeout
        Fault(status=502),
    )
    sleep = FakeSleep()
    report = client(store, sync_server, sleep=sleep, timeout=0.4).run()
    assert report.ok
    assert report.upload.uploaded == 4
    assert report.waits == sleep.waits
    base = [0.5, 1.0, None, 4.0, 8.0]  # doubling from 0.5 s; Retry-After replaces retry 2
    for wait, expected in zip(sleep.waits, base, strict=True):
        if expected is None:
            assert wait == 7.0
        else:
            assert expected * 0.9 <= wait <= expected * 1.1
    assert len(set(sync_server.event_ids())) == 4


def test_an_unreachable_server_keeps_everything_and_delivers_when_back(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 9)
    token = sync_server.add_device("phone")
    sync_server.server.stop()
    policy = RetryPolicy(max_attempts=4)
    sleep = FakeSleep()
    offline = SyncClient(store, sync_server.url, token, sleep=sleep, policy=policy).run()
    assert offline.offline
    assert not offline.ok
    assert offline.upload.pending == 9
    assert store.stats().pending_events == 9
    assert len(sleep.waits) == 3

    restart = FakeSleep(at=2, then=sync_server.server.start)  # comes back during the retries
    report = SyncClient(store, sync_server.url, token, sleep=restart, policy=policy).run()
    assert report.ok
    assert report.upload.uploaded == 9
    assert len(restart.waits) == 2
    assert len(sync_server.event_ids()) == 9


def test_413_splits_the_batch_until_it_fits(store: Store, sync_server: SyncHarness) -> None:
    fill(store, 24, context_bytes=30_000)  # ~720 KB of JSON in one batch
    report = client(
        store, sync_server, sleep=FakeSleep(), batch_events=100, batch_bytes=4 * 1024 * 1024
    ).run()
    assert report.ok
    assert report.upload.splits >= 1
    assert report.upload.uploaded == 24
    assert report.upload.quarantined == 0
    assert len(sync_server.event_ids()) == 24


def test_a_refused_batch_is_quarantined_and_the_rest_proceeds(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 10)
    sync_server.faults.add(Fault(status=422))
    sync = client(store, sync_server, sleep=FakeSleep(), batch_events=4)
    report = sync.run()
    assert report.error is None
    assert report.upload.quarantined == 4
    assert report.upload.uploaded == 6
    assert report.upload.pending == 4  # kept in the store, counted
    assert "HTTP 422" in report.upload.errors[0]
    assert [q.seq for q in store.quarantined()] == [1, 2, 3, 4]
    assert store.stats().quarantined_events == 4
    again = sync.run()  # stays quarantined across passes
    assert again.upload.uploaded == 0
    assert again.upload.pending == 4
    assert store.release_quarantined() == 4
    released = sync.run()
    assert released.upload.uploaded == 4
    assert store.stats().pending_events == 0


def test_a_revoked_token_stops_the_upload_without_quarantine(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 3)
    sync = client(store, sync_server, sleep=FakeSleep())
    storage = sync_server.storage()
    storage.revoke_device("phone")
    storage.close()
    report = sync.run()
    assert report.unauthorized
    assert not report.ok
    assert report.upload.quarantined == 0
    assert store.stats().pending_events == 3
    assert sync_server.event_ids() == []


def test_retry_policy_rules() -> None:
    assert [s for s in range(400, 600) if retryable_status(s)] == [408, 429] + [
        s for s in range(500, 600) if s not in (501, 505)
    ]
    policy = RetryPolicy()
    rng = random.Random(1)
    waits = [policy.backoff(n, rng) for n in range(14)]
    for n, wait in enumerate(waits):
        raw = min(300.0, 0.5 * 2**n)
        assert raw * 0.9 <= wait <= raw * 1.1
    assert max(waits) <= 330.0
    assert policy.wait(0, 1000.0, rng) == 300.0  # Retry-After is capped too
    assert parse_retry_after("120", now=0.0) == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon", now=0.0) is None


def test_observe_and_recommend_never_wait_for_a_sync_in_progress(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    from conftest import BUNDLE_FIXTURE

    from pocketrec.runtime import Recommender

    token = sync_server.add_device("phone")
    sync_server.faults.add(Fault(delay=60.0))  # the upload hangs on the server
    with (
        Store.open(tmp_path / "device.sqlite") as store,
        Recommender.open(BUNDLE_FIXTURE, db=store) as rec,
    ):
        items = rec.recommend(5, exclude_seen=False)[0]
        rec.observe(items[0])
        reports: list[SyncReport] = []
        policy = RetryPolicy(max_attempts=1)
        sync = threading.Thread(
            target=lambda: reports.append(rec.sync(sync_server.url, token, policy=policy))
        )
        sync.start()
        deadline = time.monotonic() + 30
        while sync_server.faults.requests == 0:  # wait until the upload is on the wire
            assert time.monotonic() < deadline, "the sync never reached the server"
            time.sleep(0.01)
        for item in items * 10:
            rec.observe(item)
            rec.recommend(5)
        assert sync.is_alive()  # still waiting on the server: nothing above waited for it
        assert reports == []
        sync_server.server.stop()  # the hanging request fails, the single attempt gives up
        sync.join(60)
        assert not sync.is_alive()
        assert reports[0].offline
        assert store.stats().pending_events == 51


def test_issue14_opt_out_during_a_retry_wait_sends_nothing_more(
    store: Store, sync_server: SyncHarness
) -> None:
    # the audit: 503 + Retry-After: 2, opt_out() during the wait; the retry used to resend a body
    # built before the opt-out, and the server stored every purged event
    fill(store, 8)
    sync_server.faults.add(Fault(status=503, retry_after="2"))
    sleep = FakeSleep(at=1, then=store.opt_out)
    report = client(store, sync_server, sleep=sleep).run()
    assert sleep.waits == [2.0]
    assert sync_server.faults.requests == 1  # the retry found nothing left to send
    assert sync_server.event_ids() == []
    assert report.upload.uploaded == 0
    assert store.stats().pending_events == 0


def test_events_erased_during_a_retry_wait_are_not_sent(
    store: Store, sync_server: SyncHarness
) -> None:
    store.append_many(
        NewEvent(user, f"i{k}", "click", timestamp=1_700_000_000.0 + k)
        for k in range(6)
        for user in ("keep", "erase")
    )
    kept = [e.event_id for e in store.pending().events if e.user_id == "keep"]
    sync_server.faults.add(Fault(status=429, retry_after="1"))
    sleep = FakeSleep(at=1, then=lambda: store.erase_user("erase"))
    report = client(store, sync_server, sleep=sleep).run()
    assert report.ok
    assert sync_server.event_ids() == kept
    assert report.upload.uploaded == len(kept)


def test_quarantined_events_follow_erase_and_opt_out(
    store: Store, sync_server: SyncHarness
) -> None:
    fill(store, 3)
    store.append("other", "i", "view")
    sync_server.faults.add(Fault(status=422))
    report = client(store, sync_server, sleep=FakeSleep()).run()
    assert report.upload.quarantined == 4
    store.erase_user("other")
    assert [q.seq for q in store.quarantined()] == [1, 2, 3]
    store.opt_out()
    assert store.quarantined() == []
    assert store.stats().quarantined_events == 0


def test_start_sync_uploads_in_the_background_and_stops(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    from conftest import BUNDLE_FIXTURE

    from pocketrec.runtime import Recommender

    token = sync_server.add_device("phone")
    with (
        Store.open(tmp_path / "device.sqlite") as store,
        Recommender.open(BUNDLE_FIXTURE, db=store) as rec,
    ):
        item = rec.recommend(1, exclude_seen=False)[0][0]
        rec.observe(item)
        background = rec.start_sync(sync_server.url, token, interval=3600.0, run_first=True)
        try:
            deadline = time.monotonic() + 30
            while background.passes < 1:
                assert time.monotonic() < deadline, "no background pass ran"
                time.sleep(0.01)
            rec.observe(item, "like")
            background.trigger()  # a second pass now, not in an hour
            while background.passes < 2:
                assert time.monotonic() < deadline, "trigger() did not run a pass"
                time.sleep(0.01)
        finally:
            background.stop(timeout=30)
        assert background.last_report is not None
        assert background.last_report.ok
        assert len(sync_server.event_ids()) == 2
        assert store.stats().pending_events == 0


def test_plain_http_to_a_remote_host_needs_an_explicit_opt_in(store: Store) -> None:
    for url in ("http://sync.example.com", "http://10.0.0.8:8080", "http://[2001:db8::1]/"):
        with pytest.raises(ValueError, match="unencrypted"):
            SyncClient(store, url, "token")
        assert SyncClient(store, url, "token", allow_http=True).client is not None
    for url in (
        "https://sync.example.com",
        "http://127.0.0.1:8080",
        "http://localhost",
        "http://[::1]:9",
    ):
        assert SyncClient(store, url, "token").client is not None
