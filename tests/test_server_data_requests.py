"""Data requests and retention on the server, on both backends: the admin routes (export, erase)
behind the operator's token, the CLI, and retention."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BACKENDS, SyncHarness

from pocketrec.cli import main
from pocketrec.server import data_requests
from pocketrec.server.admin import AdminToken, write_new_token
from pocketrec.server.running import ServerOptions
from pocketrec.server.validation import parse_batch


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def admin(tmp_path: Path, server_db: str) -> Iterator[tuple[SyncHarness, str]]:
    """A running server with an admin token; events of two devices and two users stored."""
    token_file = tmp_path / "admin.token"
    write_new_token(token_file)
    harness = SyncHarness(
        tmp_path / "server", server_db, options=ServerOptions(admin_token_file=str(token_file))
    )
    for device in ("phone-1", "phone-2"):
        harness.add_device(device)
    storage = harness.storage()
    try:
        for device in ("phone-1", "phone-2"):
            storage.insert_events(device, batch(("alice", 3), ("bob", 2)))
    finally:
        storage.close()
    harness.server.start()
    try:
        yield harness, token_file.read_text().strip()
    finally:
        harness.server.stop()


def batch(*users: tuple[str, int]) -> Any:
    events = [
        {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": f"i{k}",
         "event_type": "click", "timestamp": 1_700_000_000.0 + k, "context": {"k": k}}
        for user, count in users for k in range(count)
    ]  # fmt: skip
    return parse_batch(json.dumps({"events": events}).encode())


def call(url: str, method: str, path: str, token: str | None) -> tuple[int, bytes, str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        conn.request(method, path, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read(), reply.getheader("content-type") or ""
    finally:
        conn.close()


def test_the_admin_routes_export_and_erase_a_device_or_one_user(
    admin: tuple[SyncHarness, str],
) -> None:
    harness, token = admin
    route = "/v1/admin/devices/phone-1/events"
    status, body, kind = call(harness.url, "GET", route, token)
    assert (status, kind) == (200, "application/x-ndjson")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [(e["device_id"], e["user_id"]) for e in lines] == [("phone-1", "alice")] * 3 + [
        ("phone-1", "bob")
    ] * 2
    assert lines[0]["context"] == {"k": 0}
    status, body, _ = call(harness.url, "GET", f"{route}?user_id=bob", token)
    assert len(body.decode().splitlines()) == 2
    status, body, _ = call(harness.url, "DELETE", f"{route}?user_id=alice", token)
    assert (status, json.loads(body)) == (200, {"erased": 3})
    status, body, _ = call(harness.url, "DELETE", route, token)
    assert json.loads(body) == {"erased": 2}
    assert len(harness.event_ids()) == 5  # phone-2's events are untouched


@pytest.mark.parametrize(
    "presented", [None, "wrong-token-of-forty-characters-xxxxxxxxxxx", "device"]
)
def test_the_admin_routes_refuse_anything_but_the_admin_token(
    admin: tuple[SyncHarness, str], presented: str | None
) -> None:
    harness, _token = admin
    if presented == "device":
        presented = harness.add_device("phone-3")  # a device token is not an admin token
    for method in ("GET", "DELETE"):
        status, body, _ = call(harness.url, method, "/v1/admin/devices/phone-1/events", presented)
        assert status == 401, body
    assert len(harness.event_ids()) == 10


def test_a_bad_id_is_422_naming_the_field(admin: tuple[SyncHarness, str]) -> None:
    harness, token = admin
    status, body, _ = call(harness.url, "GET", "/v1/admin/devices/x/events?user_id=a%00b", token)
    assert status == 422
    assert json.loads(body)["field"] == "user_id"


def test_without_a_token_file_the_admin_routes_answer_401(sync_server: SyncHarness) -> None:
    status, body, _ = call(sync_server.url, "DELETE", "/v1/admin/devices/x/events", "t" * 43)
    assert status == 401
    assert b"--admin-token-file" in body


def test_the_cli_exports_erases_and_applies_retention(
    tmp_path: Path, server_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = SyncHarness(tmp_path / "server", server_db)
    harness.add_device("phone-1")
    storage = harness.storage()
    try:
        old = time.time() - 40 * data_requests.DAY_SECONDS
        storage.insert_events("phone-1", batch(("alice", 2)), received_at=old)
        storage.insert_events("phone-1", batch(("alice", 1), ("bob", 1)))
    finally:
        storage.close()
    out = tmp_path / "alice.jsonl"
    assert main(["data", "export", "--db", server_db, "--device", "phone-1", "--user", "alice",
                 "--out", str(out)]) == 0  # fmt: skip
    assert len(out.read_text().splitlines()) == 3
    assert main(["retention", "--db", server_db, "--days", "30"]) == 0
    assert "dropped 2 events" in capsys.readouterr().out
    assert main(["data", "erase", "--db", server_db, "--device", "phone-1", "--user", "bob"]) == 0
    assert "erased 1 events" in capsys.readouterr().out
    assert len(harness.event_ids()) == 1
    assert main(["data", "erase", "--db", server_db, "--device", "bad\nid"]) == 2
    assert main(["retention", "--db", server_db, "--days", "0"]) == 2


def test_an_admin_token_is_long_and_stored_only_as_a_hash(tmp_path: Path) -> None:
    write_new_token(tmp_path / "t")
    token = (tmp_path / "t").read_text().strip()
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o600
    assert AdminToken(token).matches(token)
    assert not AdminToken(token).matches(token[:-1])
    assert token not in repr(vars(AdminToken(token)))
    with pytest.raises(ValueError, match="at least 32"):
        AdminToken("short")
    with pytest.raises(FileExistsError):
        write_new_token(tmp_path / "t")  # never replaced
