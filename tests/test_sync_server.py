"""The reference sync server over real HTTP: auth, limits, schema, idempotency, bundles, export;
on both database backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BACKENDS, SyncHarness, database_bytes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocketrec.cli import main
from pocketrec.core import load
from pocketrec.runtime.sync.http import HttpClient, Response
from pocketrec.server.validation import MAX_BATCH_BYTES, MAX_EVENT_BYTES


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both backends."""
    return str(request.param)


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": str(uuid.uuid4()),
        "seq": 1,
        "user_id": "alice",
        "item_id": "i00001",
        "event_type": "click",
        "timestamp": 1_700_000_000.5,
        "context": None,
    }
    return {**base, **fields}


def post(client: HttpClient, events: list[dict[str, Any]]) -> Response:
    return client.post_json("/v1/events", json.dumps({"events": events}).encode())


@pytest.mark.parametrize(("cache_seconds", "after_revoke"), [(0.0, 401), (3600.0, 200)])
def test_a_revoked_token_is_refused_once_the_workers_auth_cache_lets_go(
    tmp_path: Path, server_db: str, cache_seconds: float, after_revoke: int
) -> None:
    """Without the cache the next request after a revocation is refused; with it the worker
    trusts a token it checked for ``--auth-cache-seconds`` (the documented revocation lag)."""
    from pocketrec.server.running import ServerOptions

    harness = SyncHarness(
        tmp_path / "server", server_db, ServerOptions(auth_cache_seconds=cache_seconds)
    )
    harness.server.start()
    try:
        client = HttpClient(harness.url, harness.add_device("phone"))
        assert post(client, [event()]).status == 200
        assert main(["device", "revoke", "--db", harness.db, "phone"]) == 0
        assert post(client, [event()]).status == after_revoke
        assert len(harness.event_ids()) == (2 if after_revoke == 200 else 1)
    finally:
        harness.server.stop()


def test_a_batch_is_stored_once_however_often_it_is_sent(sync_server: SyncHarness) -> None:
    client = HttpClient(sync_server.url, sync_server.add_device("phone"))
    batch = [event(seq=i + 1) for i in range(5)]
    first = post(client, batch)
    again = post(client, [*batch, event(seq=6)])
    assert first.status == again.status == 200
    assert json.loads(first.body) == {"received": 5, "new": 5, "duplicates": 0}
    assert json.loads(again.body) == {"received": 6, "new": 1, "duplicates": 5}
    assert len(sync_server.event_ids()) == 6


@pytest.mark.parametrize("token", [None, "not-a-token", "revoked"])
def test_no_wrong_or_revoked_token_gets_401_and_nothing_is_stored(
    sync_server: SyncHarness, token: str | None
) -> None:
    good = sync_server.add_device("phone")
    if token == "revoked":
        token = sync_server.add_device("old-phone")
        assert main(["device", "revoke", "--db", sync_server.db, "old-phone"]) == 0
    client = HttpClient(sync_server.url, token or "")
    if token is None:
        reply = client.request(
            "POST", "/v1/events", body=b'{"events": []}', headers={"Authorization": ""}
        )
    else:
        reply = post(client, [event()])
    assert reply.status == 401
    assert reply.header("www-authenticate") == "Bearer"
    assert sync_server.event_ids() == []
    latest = HttpClient(sync_server.url, token or "x").request("GET", "/v1/bundles/latest")
    assert latest.status == 401
    assert post(HttpClient(sync_server.url, good), [event()]).status == 200


def test_the_token_is_stored_only_as_its_hash(sync_server: SyncHarness) -> None:
    token = sync_server.add_device("phone")
    stored = database_bytes(sync_server.db)
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert token.encode() not in stored


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"timestamp": "yesterday"}, "events[1].timestamp"),
        ({"event_type": "teleport"}, "events[1].event_type"),
        ({"event_id": "42"}, "events[1].event_id"),
        ({"user_id": ""}, "events[1].user_id"),
        ({"context": [1, 2]}, "events[1].context"),
        ({"seq": -3}, "events[1].seq"),
    ],
)
def test_a_schema_violation_is_422_naming_the_field_and_stores_nothing(
    sync_server: SyncHarness, bad: dict[str, Any], field: str
) -> None:
    client = HttpClient(sync_server.url, sync_server.add_device("phone"))
    reply = post(client, [event(), event(**bad)])
    assert reply.status == 422
    assert json.loads(reply.body)["field"] == field
    assert sync_server.event_ids() == []


def test_oversized_events_and_batches_get_413(sync_server: SyncHarness) -> None:
    client = HttpClient(sync_server.url, sync_server.add_device("phone"))
    big_event = event(context={"blob": "x" * MAX_EVENT_BYTES})
    reply = post(client, [event(), big_event])
    assert reply.status == 413
    assert json.loads(reply.body)["field"] == "events[1]"
    many = [event(context={"blob": "y" * 20_000}) for _ in range(MAX_BATCH_BYTES // 20_000 + 2)]
    reply = post(client, many)
    assert reply.status == 413
    assert json.loads(reply.body)["field"] == "body"
    assert sync_server.event_ids() == []


def test_the_latest_bundle_is_signed_and_files_download_with_ranges(
    sync_server: SyncHarness,
) -> None:
    client = HttpClient(sync_server.url, sync_server.add_device("phone"))
    assert client.request("GET", "/v1/bundles/latest").status == 404
    published = sync_server.publish(3)
    reply = client.request("GET", "/v1/bundles/latest")
    assert reply.status == 200
    latest = json.loads(reply.body)
    manifest = base64.b64decode(latest["manifest"])
    assert latest["model_version"] == 3 == json.loads(manifest)["model_version"]
    assert manifest == (published / "manifest.json").read_bytes()
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sync_server.public_key))
    key.verify(base64.b64decode(latest["signature"]), manifest)  # raises if not

    whole = (published / "step.tflite").read_bytes()
    full = client.request("GET", "/v1/bundles/3/files/step.tflite")
    assert (full.status, full.body) == (200, whole)
    part = client.request(
        "GET", "/v1/bundles/3/files/step.tflite", headers={"Range": "bytes=1000-"}
    )
    assert (part.status, part.body) == (206, whole[1000:])
    assert part.header("content-range") == f"bytes 1000-{len(whole) - 1}/{len(whole)}"
    past = client.request(
        "GET", "/v1/bundles/3/files/step.tflite", headers={"Range": f"bytes={len(whole)}-"}
    )
    assert past.status == 416
    for name in ("manifest.sig", "..%2Fkey", "nope.bin"):
        assert client.request("GET", f"/v1/bundles/3/files/{name}").status == 404


def test_publish_refuses_a_version_that_is_not_newer(
    sync_server: SyncHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_server.publish(5)
    older = sync_server.root / "older"
    from conftest import BUNDLE_FIXTURE, bundle_version

    bundle_version(BUNDLE_FIXTURE, older, 4)
    code = main(
        ["publish", str(older), "--server-dir", str(sync_server.published),
         "--key", str(sync_server.root / "key"), "--db", sync_server.db]
    )  # fmt: skip
    assert code == 2
    assert "only go up" in capsys.readouterr().err
    assert sync_server.server.bundles.latest_version() == 5


def test_export_feedback_writes_the_csv_that_train_reads(
    sync_server: SyncHarness, tmp_path: Path
) -> None:
    phone = HttpClient(sync_server.url, sync_server.add_device("phone"))
    tablet = HttpClient(sync_server.url, sync_server.add_device("tablet"))
    sent = [event(item_id=f"i{k:05d}", timestamp=1000.0 + k) for k in range(4)]
    assert post(phone, sent).status == 200
    assert post(tablet, [event(event_type="dislike", item_id="i00009")]).status == 200
    out = tmp_path / "feedback.csv"
    assert main(["export-feedback", "--db", sync_server.db, "--out", str(out)]) == 0
    data, report = load(out, format="csv")
    assert report.total_skipped == 0
    assert sorted(data.users.id(u) for u in range(data.num_users)) == [
        "phone/alice",
        "tablet/alice",
    ]
    phone_user = next(u for u in range(data.num_users) if data.users.id(u) == "phone/alice")
    items = [data.items.id(i) for i in data.sequences[phone_user].tolist()]
    assert items == [e["item_id"] for e in sent]
