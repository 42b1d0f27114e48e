"""Per-device rate limits: token buckets, 429 with Retry-After, and the real SyncClient slowed
down by them without losing or duplicating anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ManualClock, SyncHarness
from server_process import get, metric_samples
from test_sync_server import event, post

from pocketrec.runtime.sync.client import SyncClient
from pocketrec.runtime.sync.http import HttpClient
from pocketrec.server.ratelimit import RateLimit, TokenBuckets
from pocketrec.server.running import ServerOptions
from pocketrec.storage import Store


def test_a_bucket_allows_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=3), clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert buckets.take("b") == 0.0  # buckets are per device
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.retry_after(0.01) == "1"
    assert buckets.retry_after(2.2) == "3"


def test_buckets_that_are_full_again_are_forgotten() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=2), clock=clock)
    for device in range(1000):
        buckets.take(f"d{device}")
    assert len(buckets) == 1000
    clock.now += 2.0  # every bucket has refilled
    buckets.take("new")
    assert len(buckets) == 1


@pytest.mark.parametrize("text", ["5", "5/", "/5", "x/2", "0/5", "5/0", "-1/3", "nan/2", "5/2.5"])
def test_a_malformed_rate_limit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="RATE/BURST"):
        RateLimit.parse(text)


def test_rate_limit_parses_and_prints() -> None:
    assert RateLimit.parse("2.5/10") == RateLimit(2.5, 10)
    assert str(RateLimit(2.5, 10)) == "2.5/10"


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[SyncHarness]:
    """A server allowing each device 0.5 requests/s in bursts of 2."""
    harness = SyncHarness(tmp_path / "server", options=ServerOptions(rate_limit=RateLimit(0.5, 2)))
    harness.server.start()
    try:
        yield harness
    finally:
        harness.server.stop()


def rate_limited(url: str) -> float:
    samples = metric_samples(get(url, "/metrics")[1].decode())
    return sum(v for (name, _), v in samples.items() if name == "pocketrec_rate_limited_total")


def test_a_device_over_its_budget_gets_429_with_retry_after_and_others_do_not(
    limited: SyncHarness,
) -> None:
    before = rate_limited(limited.url)
    phone = HttpClient(limited.url, limited.add_device("phone"))
    assert post(phone, [event()]).status == 200
    assert phone.request("GET", "/v1/bundles/latest").status == 404  # every route counts
    refused = post(phone, [event()])
    assert refused.status == 429
    assert refused.header("retry-after") in ("1", "2")
    assert json.loads(refused.body)["error"] == "rate_limited"
    tablet = HttpClient(limited.url, limited.add_device("tablet"))
    assert post(tablet, [event()]).status == 200
    assert len(limited.event_ids()) == 2  # the refused batch was not stored
    assert rate_limited(limited.url) - before == 1
    assert get(limited.url, "/healthz")[0] == 200  # unauthenticated routes are not limited


def test_the_sync_client_is_slowed_by_the_limit_but_loses_and_duplicates_nothing(
    limited: SyncHarness, tmp_path: Path
) -> None:
    before = rate_limited(limited.url)
    token = limited.add_device("phone")
    with Store.open(tmp_path / "device.sqlite") as store:
        for k in range(15):
            store.append("alice", f"i{k:05d}", "click")
        sent = [e.event_id for e in store.pending(max_events=100).events]
        report = SyncClient(store, limited.url, token, batch_events=5).run()
        assert report.ok, report.error
        assert report.upload.uploaded == 15
        assert store.stats().pending_events == 0
    assert any(wait >= 1.0 for wait in report.waits)  # Retry-After, not the 0.5 s backoff
    stored = limited.event_ids()
    assert sorted(stored) == sorted(sent)  # each event once
    assert rate_limited(limited.url) - before >= 1
