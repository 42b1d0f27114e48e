"""HTTP keep-alive in the device client: the requests of a sync pass share one connection (seen
server-side, in the access log's ``client`` address), a connection the server closed between
two requests (restart, keep-alive timeout) costs nothing and loses or duplicates no event, and
a kept connection closed under a request is resent once on a new one only when that is safe.

The last group needs the server to close a connection at one exact moment (after the client
checked it, while its request is on the way): a scripted HTTP/1.1 server on a real loopback
socket does that, since the real server cannot be timed so precisely."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import SyncHarness
from server_process import write_tls_files
from test_server_transport import serving
from test_sync_bundles import device
from test_sync_server import event, post
from test_sync_upload import FakeSleep, fill

from pocketrec.core.bundle import read_manifest
from pocketrec.runtime.sync import SyncClient
from pocketrec.runtime.sync.http import HttpClient, NetworkError
from pocketrec.server import Fault
from pocketrec.server.access_log import ACCESS_LOGGER
from pocketrec.server.running import ServerOptions
from pocketrec.storage import Store


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """The in-process server's access-log lines (parsed), as they come."""

    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    logger = logging.getLogger(ACCESS_LOGGER)
    handler = Collect()
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def device_lines(lines: list[dict[str, Any]], device_id: str = "phone") -> list[dict[str, Any]]:
    return [line for line in lines if line["device"] == device_id]


def routes(lines: list[dict[str, Any]]) -> list[str]:
    return [line["route"] for line in lines]


# ---------------------------------------------------------------- the real server


def test_the_requests_of_a_pass_share_one_connection_closed_when_it_ends(
    tmp_path: Path, sync_server: SyncHarness, access_log: list[dict[str, Any]]
) -> None:
    published = sync_server.publish(2)
    store, _ = device(tmp_path)
    fill(store, 23)
    token = sync_server.add_device("phone")
    client = SyncClient(
        store, sync_server.url, token, public_key=sync_server.public_key, batch_events=5
    )
    with store:
        report = client.run()
        assert report.ok, report.error
        assert report.bundle is not None
        assert report.bundle.status == "installed"
        first = device_lines(access_log)
        files = read_manifest(published).files
        assert routes(first).count("/v1/events") == 5
        assert routes(first).count("/v1/bundles/latest") == 1
        assert routes(first).count("/v1/bundles/{version}/files/{name}") == len(files)
        assert len({line["client"] for line in first}) == 1  # one connection for all of them
        store.append("u1", "i00001", "click")
        again = client.run()
        assert again.ok
        assert again.upload.uploaded == 1
    second = device_lines(access_log)[len(first) :]
    assert routes(second) == ["/v1/events", "/v1/bundles/latest"]
    assert len({line["client"] for line in second}) == 1
    assert second[0]["client"] != first[0]["client"]  # the first pass closed its connection
    assert len(sync_server.event_ids()) == len(set(sync_server.event_ids())) == 24


def test_a_server_restart_between_two_uploads_loses_and_duplicates_nothing(
    store: Store, sync_server: SyncHarness, access_log: list[dict[str, Any]]
) -> None:
    fill(store, 23)
    expected = [e.event_id for e in store.pending(max_events=100).events]

    def restart() -> None:  # during the retry wait: the kept connection is closed meanwhile
        sync_server.server.stop()
        sync_server.server.start()

    sync_server.faults.add(Fault(), Fault(status=503, retry_after="0"))
    sleep = FakeSleep(at=1, then=restart)
    token = sync_server.add_device("phone")
    report = SyncClient(store, sync_server.url, token, sleep=sleep, batch_events=5).run()
    assert report.ok, report.error
    assert report.upload.uploaded == 23
    assert report.waits == [0.0]  # only the 503's: the closed connection cost no retry
    assert sync_server.event_ids() == expected  # each once, in order
    uploads = [line for line in device_lines(access_log) if line["route"] == "/v1/events"]
    assert [line["status"] for line in uploads] == [200, 503, 200, 200, 200, 200]
    assert uploads[0]["client"] == uploads[1]["client"]  # kept until the restart
    assert uploads[2]["client"] != uploads[1]["client"]  # a new connection after it
    assert len({line["client"] for line in uploads[2:]}) == 1


def test_a_keep_alive_timeout_between_two_uploads_loses_and_duplicates_nothing(
    tmp_path: Path, store: Store, access_log: list[dict[str, Any]]
) -> None:
    import time

    fill(store, 10)
    with serving(tmp_path / "server", keep_alive_timeout=1) as server:
        server.faults.add(Fault(), Fault(status=503, retry_after="0"))
        # the retry wait outlasts the server's keep-alive timeout (1 s) threefold
        sleep = FakeSleep(at=1, then=lambda: time.sleep(3.0))
        token = server.add_device("phone")
        report = SyncClient(store, server.url, token, sleep=sleep, batch_events=5).run()
        assert report.ok, report.error
        assert report.waits == [0.0]
        ids = server.event_ids()
    assert len(ids) == len(set(ids)) == 10
    uploads = [line for line in device_lines(access_log) if line["route"] == "/v1/events"]
    assert [line["status"] for line in uploads] == [200, 503, 200]
    assert uploads[0]["client"] == uploads[1]["client"]
    assert uploads[2]["client"] != uploads[1]["client"]


def test_a_restart_between_two_bundle_downloads_resumes_the_pass(
    tmp_path: Path, sync_server: SyncHarness, access_log: list[dict[str, Any]]
) -> None:
    published = sync_server.publish(2)
    store, _ = device(tmp_path)
    files = {name: entry.bytes for name, entry in read_manifest(published).files.items()}
    restarted: list[str] = []

    def progress(stage: str, amount: int) -> None:
        name = stage.removeprefix("download:")
        if not restarted and name in files and amount == files[name]:  # a file complete
            restarted.append(name)
            sync_server.server.stop()
            sync_server.server.start()

    token = sync_server.add_device("phone")
    with store:
        report = SyncClient(
            store, sync_server.url, token, public_key=sync_server.public_key, progress=progress
        ).run()
        assert report.ok, report.error
        assert report.bundle is not None
        assert report.bundle.status == "installed"
        assert report.waits == []
        assert report.bundle.path is not None
        for name in files:
            assert (report.bundle.path / name).read_bytes() == (published / name).read_bytes()
    assert restarted
    downloads = [
        line
        for line in device_lines(access_log)
        if line["route"] == "/v1/bundles/{version}/files/{name}"
    ]
    assert [line["status"] for line in downloads] == [200] * len(files)
    assert downloads[0]["client"] != downloads[1]["client"]  # the restart closed it
    assert len({line["client"] for line in downloads[1:]}) == 1


def test_threads_sharing_one_client_each_get_their_own_connection(
    sync_server: SyncHarness,
) -> None:
    client = HttpClient(sync_server.url, sync_server.add_device("phone"))
    statuses: list[int] = []
    lock = threading.Lock()

    def upload(k: int) -> None:
        for i in range(10):
            status = post(client, [event(seq=100 * k + i + 1)]).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=upload, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert statuses == [200] * 40
    ids = sync_server.event_ids()
    assert len(ids) == len(set(ids)) == 40


def test_https_requests_share_one_connection(
    tmp_path: Path, access_log: list[dict[str, Any]]
) -> None:
    ca, cert, key = write_tls_files(tmp_path / "tls")
    server = SyncHarness(
        tmp_path / "server", options=ServerOptions(ssl_certfile=str(cert), ssl_keyfile=str(key))
    )
    server.server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(ca))
        with HttpClient(server.url, server.add_device("phone"), ssl_context=trusted) as client:
            for k in range(3):
                assert post(client, [event(seq=k + 1)]).status == 200
            assert client.request("GET", "/v1/bundles/latest").status == 404
        assert len(server.event_ids()) == 3
    finally:
        server.server.stop()
    lines = device_lines(access_log)
    assert len(lines) == 4
    assert len({line["client"] for line in lines}) == 1


# ---------------------------------------------------------------- a scripted server


@dataclass
class Seen:
    """One request the scripted server read: on which connection (0-based), and its head."""

    connection: int
    method: str
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """An HTTP/1.1 server on a loopback socket that serves its ``i``-th connection by
    ``scripts[i]``, one action per request it reads: ``"ok"`` (200, body ``b"ok"``, kept
    alive), ``"close"`` (read the request, close without answering), ``"hang"`` (read it,
    answer nothing until the test ends), ``"partial"`` (200 announcing ``BODY`` but sending
    only its first 40 bytes, then close) or ``"rest"`` (206 with ``BODY`` after the request's
    ``Range`` start)."""

    BODY = bytes(range(100))

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = scripts
        self.seen: list[Seen] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            index = self.connections
            self.connections += 1
            with conn:
                self._run(conn, index, self.scripts[index] if index < len(self.scripts) else [])

    def _run(self, conn: socket.socket, index: int, script: list[str]) -> None:
        buffered = b""
        for action in script:
            while b"\r\n\r\n" not in buffered:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffered += chunk
            head, buffered = buffered.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, value in (line.split(":", 1) for line in lines[1:])
            )
            length = int(headers.get("content-length", "0"))
            while len(buffered) < length:
                buffered += conn.recv(65536)
            buffered = buffered[length:]
            self.seen.append(Seen(index, lines[0].split(" ")[0], headers))
            if action == "close":
                return
            if action == "hang":
                self._stop.wait(30)
                return
            if action == "ok":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            elif action == "partial":
                head_out = f"HTTP/1.1 200 OK\r\ncontent-length: {len(self.BODY)}\r\n\r\n"
                conn.sendall(head_out.encode() + self.BODY[:40])
                return
            elif action == "rest":
                start = int(headers["range"].removeprefix("bytes=").rstrip("-"))
                rest = self.BODY[start:]
                total = len(self.BODY)
                conn.sendall(
                    f"HTTP/1.1 206 Partial Content\r\ncontent-length: {len(rest)}\r\n"
                    f"content-range: bytes {start}-{total - 1}/{total}\r\n\r\n".encode()
                    + rest
                )


@pytest.mark.parametrize(
    ("method", "idempotent"), [("GET", None), ("POST", True), ("DELETE", None)]
)
def test_an_idempotent_request_on_a_kept_connection_closed_under_it_is_resent_once(
    method: str, idempotent: bool | None
) -> None:
    with ScriptedServer([["ok", "close"], ["ok"]]) as server:
        client = HttpClient(server.url, "token")
        assert client.request(method, "/a", body=b"{}", idempotent=idempotent).status == 200
        assert client.request(method, "/b", body=b"{}", idempotent=idempotent).body == b"ok"
    assert [(s.connection, s.method) for s in server.seen] == [(0, method)] * 2 + [(1, method)]


def test_a_post_not_marked_idempotent_is_never_resent() -> None:
    with ScriptedServer([["ok", "close"], ["ok"]]) as server:
        client = HttpClient(server.url, "token")
        assert client.post_json("/a", b"{}").status == 200
        with pytest.raises(NetworkError, match=r"RemoteDisconnected|Connection"):
            client.post_json("/b", b"{}")
    assert [s.connection for s in server.seen] == [0, 0]  # sent once, never again


def test_a_new_connection_that_fails_or_a_timeout_is_not_resent() -> None:
    with ScriptedServer([["close"], ["ok", "hang"], ["ok"]]) as server:
        client = HttpClient(server.url, "token", timeout=0.5)
        with pytest.raises(NetworkError):  # a new connection: the caller's policy decides
            client.request("GET", "/a")
        assert client.request("GET", "/b").status == 200
        with pytest.raises(NetworkError, match="timed out"):  # kept, but a timeout: not resent
            client.request("GET", "/c")
        assert server.connections == 2
    assert [s.connection for s in server.seen] == [0, 1, 1]


def test_a_download_cut_after_its_first_byte_is_not_resent_and_resumes_on_the_next_call(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "file.part"
    body = ScriptedServer.BODY
    with ScriptedServer([["ok", "partial"], ["rest"]]) as server:
        client = HttpClient(server.url, "token")
        assert client.request("GET", "/latest").status == 200
        # the connection ended before the announced length: what came is kept, the caller
        # (bundles._fetch) sees the file short and calls again, which resumes
        assert client.download("/file", dest, limit=len(body)).status == 200
        assert dest.read_bytes() == body[:40]
        assert client.download("/file", dest, limit=len(body)).status == 206
    assert dest.read_bytes() == body
    assert [(s.connection, s.headers.get("range")) for s in server.seen] == [
        (0, None),
        (0, None),
        (1, "bytes=40-"),
    ]


def test_close_ends_the_kept_connection_and_the_client_stays_usable() -> None:
    with ScriptedServer([["ok", "ok"], ["ok"]]) as server:
        client = HttpClient(server.url, "token")
        assert client.request("GET", "/a").status == 200
        assert client.request("GET", "/b").status == 200
        client.close()
        assert client.request("GET", "/c").status == 200
        client.close()
    assert [s.connection for s in server.seen] == [0, 0, 1]


def test_a_download_stopped_at_its_limit_does_not_keep_the_connection(tmp_path: Path) -> None:
    with ScriptedServer([["ok", "rest"], ["ok"]]) as server:
        client = HttpClient(server.url, "token")
        assert client.request("GET", "/a").status == 200
        dest = tmp_path / "file.part"
        dest.write_bytes(b"x" * 10)  # resume at 10; the server has 90 more, the limit is 20
        client.download("/file", dest, limit=20)
        assert dest.stat().st_size == 21  # stopped one byte past the limit: not the file
        assert client.request("GET", "/b").status == 200  # on a new connection
    assert [s.connection for s in server.seen] == [0, 0, 1]
