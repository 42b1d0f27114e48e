"""Operating the sync server: health and readiness, Prometheus metrics (one process and several
workers), JSON access logs without tokens, graceful shutdown, the --workers rule."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SyncHarness
from server_process import ServerProcess, connect, get, metric, metric_samples, read_reply
from test_sync_server import event, post

from pocketrec.cli import main
from pocketrec.runtime.sync.http import HttpClient


def test_healthz_and_readyz_answer_and_readyz_fails_when_the_database_does_not(
    sync_server: SyncHarness,
) -> None:
    for path, status in (("/healthz", "ok"), ("/v1/health", "ok"), ("/readyz", "ready")):
        code, body = get(sync_server.url, path)
        assert (code, json.loads(body)) == (200, {"status": status})
    sync_server.server.storage.close()  # the database is gone from under the server
    code, body = get(sync_server.url, "/readyz")
    assert code == 503
    assert json.loads(body)["error"] == "unavailable"
    assert get(sync_server.url, "/healthz")[0] == 200  # the process itself is still up


def test_metrics_count_requests_events_duplicates_batches_and_bundle_downloads(
    sync_server: SyncHarness,
) -> None:
    url = sync_server.url
    status, text = get(url, "/metrics")
    assert status == 200
    before = metric_samples(text.decode())
    client = HttpClient(url, sync_server.add_device("phone"))
    batch = [event(seq=i + 1) for i in range(3)]
    assert post(client, batch).status == 200
    assert post(client, [*batch, event(seq=4)]).status == 200
    assert HttpClient(url, "wrong").request("GET", "/v1/bundles/latest").status == 401
    sync_server.publish(3)
    path = "/v1/bundles/3/files/step.tflite"
    assert client.request("GET", path).status == 200
    assert client.request("GET", path, headers={"Range": "bytes=10-"}).status == 206
    after = metric_samples(get(url, "/metrics")[1].decode())

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("pocketrec_events_received_total") == 7
    assert delta("pocketrec_events_stored_total") == 4
    assert delta("pocketrec_events_duplicate_total") == 3
    assert delta("pocketrec_batch_events_count") == 2
    assert delta("pocketrec_batch_events_sum") == 7
    assert delta("pocketrec_batch_events_bucket", le="2.0") == 0
    assert delta("pocketrec_batch_events_bucket", le="5.0") == 2
    # one request at a time: every group commit wrote one write (SQLite's also carry the
    # device and bundle records)
    assert delta("pocketrec_commit_batches_count") >= 2
    assert delta("pocketrec_commit_batches_sum") == delta("pocketrec_commit_batches_count")
    events_route = {"method": "POST", "route": "/v1/events"}
    assert delta("pocketrec_http_requests_total", status="200", **events_route) == 2
    assert delta("pocketrec_http_request_duration_seconds_count", **events_route) == 2
    latest = {"method": "GET", "route": "/v1/bundles/latest"}
    assert delta("pocketrec_http_requests_total", status="401", **latest) == 1
    file = {"version": "3", "file": "step.tflite"}
    assert delta("pocketrec_bundle_downloads_total", status="200", **file) == 1
    assert delta("pocketrec_bundle_downloads_total", status="206", **file) == 1


def test_access_log_is_one_json_line_per_request_and_never_holds_the_token(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "server")
    token = server.add_device("phone-1")
    with server:
        client = HttpClient(server.url, token)
        assert post(client, [event()]).status == 200
        assert (
            HttpClient(server.url, token + "x").request("GET", "/v1/bundles/latest").status == 401
        )
        assert client.request("GET", f"/v1/bundles/latest?token={token}").status == 404
        assert client.request("GET", f"/no/such/{token}").status == 404
        bad = client.post_json("/v1/events", json.dumps({"events": [{"token": token}]}).encode())
        assert bad.status == 422
    assert token not in server.output()
    assert "Bearer" not in server.output()
    lines = [line for line in server.access_lines() if line["route"] != "/healthz"]
    assert [(line["method"], line["route"], line["status"], line["device"]) for line in lines] == [
        ("POST", "/v1/events", 200, "phone-1"),
        ("GET", "/v1/bundles/latest", 401, None),
        ("GET", "/v1/bundles/latest", 404, "phone-1"),
        ("GET", "<unmatched>", 404, None),
        ("POST", "/v1/events", 422, "phone-1"),
    ]
    for line in lines:
        assert set(line) == {
            "time", "method", "route", "status", "duration_ms", "bytes_in", "bytes_out",
            "device", "client", "pid",
        }  # fmt: skip
        assert line["time"].endswith("Z")
        dt.datetime.fromisoformat(line["time"][:-1])
        assert line["duration_ms"] >= 0
        assert line["client"].startswith("127.0.0.1:")
        assert line["pid"] == server.process.pid  # type: ignore[union-attr]
    assert lines[0]["bytes_in"] > 100
    assert lines[0]["bytes_out"] == len(b'{"received":1,"new":1,"duplicates":0}')


def _wait_for_in_flight(url: str, requests: int) -> None:
    """Until ``requests`` requests besides the scrape itself are in progress on the server."""
    deadline = time.monotonic() + 30
    while metric(url, "pocketrec_http_requests_in_progress") < requests + 1:
        assert time.monotonic() < deadline, "the request never reached the application"
        time.sleep(0.02)


def _refused(url: str) -> bool:
    try:
        connect(url, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_batch_in_flight_at_shutdown_is_stored_and_acknowledged(tmp_path: Path, sig: int) -> None:
    server = ServerProcess(tmp_path / "server", "--graceful-timeout", "30")
    token = server.add_device("phone")
    batch = [event(seq=i + 1) for i in range(20)]
    body = json.dumps({"events": batch}).encode()
    with server:
        sock = connect(server.url)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        _wait_for_in_flight(server.url, 1)
        server.send(sig)
        deadline = time.monotonic() + 30
        while not _refused(server.url):  # it stops accepting at once ...
            assert time.monotonic() < deadline, "still accepting connections after the signal"
            time.sleep(0.05)
        sock.sendall(body[len(body) // 2 :])  # ... and still finishes the batch in flight
        reply = read_reply(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {
            "received": 20, "new": 20, "duplicates": 0,
        }  # fmt: skip
        assert server.wait(60) == 0
    assert sorted(server.event_ids()) == sorted(e["event_id"] for e in batch)
    assert "Application shutdown complete" in server.output()


def test_shutdown_waits_for_a_stuck_request_at_most_the_graceful_timeout(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--graceful-timeout", "1", "--body-timeout", "3600")
    token = server.add_device("phone")
    with server:
        sock = connect(server.url)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"events": ['
        )  # ... and the rest never comes
        _wait_for_in_flight(server.url, 1)
        server.send(signal.SIGTERM)
        assert server.wait(60) == 0  # long before the hour-long body timeout
        reply = read_reply(sock, limit=10)  # cut: 503, retry later; nothing acknowledged
        sock.close()
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nretry-after: 1\r\n" in reply.lower()
    assert server.event_ids() == []


def test_workers_above_one_are_refused_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["serve", "--db", str(tmp_path / "s.sqlite"), "--bundles", str(tmp_path / "b"),
         "--workers", "2"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs a postgresql:// database" in err
    assert not (tmp_path / "s.sqlite").exists()  # refused before anything was opened


def test_metrics_of_several_workers_are_summed_whichever_worker_is_scraped(
    tmp_path: Path,
) -> None:
    """Two real worker processes (uvicorn's supervisor, the production ``_run`` path); SQLite is
    safe with two processes at this load (each worker has its own group committer and they take
    turns on the write lock), ``serve`` only refuses it because it does not scale."""
    root = tmp_path / "server"
    server = ServerProcess(root)
    code = (
        "from pocketrec.server.running import ServerOptions, _run; "
        f"_run({str(server.db)!r}, {str(server.bundles)!r}, host='127.0.0.1', "
        f"port={server.port}, workers=2, options=ServerOptions())"
    )
    server.command = [sys.executable, "-c", code]
    token = server.add_device("phone")
    prometheus_dirs = set(Path(tempfile.gettempdir()).glob("pocketrec-prom-*"))
    with server:
        client = HttpClient(server.url, token)
        uploads = 0
        while uploads < 200:  # until both workers have stored batches (the kernel chooses)
            assert post(client, [event(), event()]).status == 200
            client.close()  # a new connection for each: the kernel picks a worker per connection
            uploads += 1
            pids = {line["pid"] for line in server.access_lines() if line["route"] == "/v1/events"}
            if uploads >= 10 and len(pids) == 2:
                break
        assert len(pids) == 2, "all uploads landed on one worker"
        answered_by = set()
        for _ in range(20):
            assert metric(server.url, "pocketrec_events_received_total") == 2 * uploads
            assert metric(server.url, "pocketrec_events_stored_total") == 2 * uploads
            requests = metric(
                server.url, "pocketrec_http_requests_total",
                method="POST", route="/v1/events", status="200",
            )  # fmt: skip
            assert requests == uploads
            answered_by |= {line["pid"] for line in server.access_lines()
                            if line["route"] == "/metrics"}  # fmt: skip
        server.send(signal.SIGTERM)
        assert server.wait(60) == 0
    assert len(server.event_ids()) == 2 * uploads
    assert set(Path(tempfile.gettempdir()).glob("pocketrec-prom-*")) == prometheus_dirs
    assert answered_by  # the scrapes were served (by whichever worker took them)
