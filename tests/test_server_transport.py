"""The server's transport limits on real sockets: header and body read timeouts, the connection
cap, keep-alive, and TLS with certificate verification on the device side."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import SyncHarness
from server_process import connect, get, metric, read_reply, status_of, write_tls_files
from test_sync_server import event, post

from pocketrec.runtime.sync.client import SyncClient
from pocketrec.runtime.sync.http import HttpClient, NetworkError
from pocketrec.server import Fault
from pocketrec.server.running import ServerOptions
from pocketrec.server.transport import TransportLimits
from pocketrec.storage import Store


@contextmanager
def serving(root: Path, **limits: Any) -> Iterator[SyncHarness]:
    """A started :class:`SyncHarness` with these transport limits (stopped afterwards)."""
    server = SyncHarness(root, options=ServerOptions(limits=TransportLimits(**limits)))
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def quick_headers(tmp_path: Path) -> Iterator[SyncHarness]:
    """A server that wants request headers within 1 s (and keeps idle connections 30 s)."""
    with serving(tmp_path / "server", header_timeout=1.0, keep_alive_timeout=30) as server:
        yield server


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before a response"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return status_of(head), body


def closed_by_server(sock: socket.socket, *, limit: float = 30.0) -> bool:
    """True when the server closes ``sock`` within ``limit`` seconds (data before is dropped)."""
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_slow_header_sockets_get_408_and_are_closed_while_others_are_served(
    quick_headers: SyncHarness,
) -> None:
    url = quick_headers.url
    timeouts_before = metric(url, "pocketrec_transport_timeouts_total", phase="headers")
    selector = selectors.DefaultSelector()
    replies: dict[socket.socket, bytes] = {}
    for _ in range(50):
        sock = connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        replies[sock] = b""
    open_socks = set(replies)
    control = []
    deadline = time.monotonic() + 60
    while open_socks and time.monotonic() < deadline:
        for sock in list(open_socks):
            with contextlib.suppress(OSError):
                sock.send(b"y")  # one byte at a time: never a complete header
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            replies[sock] += chunk
            if not chunk:
                open_socks.discard(sock)
                selector.unregister(sock)
        control.append(get(url, "/healthz")[0])  # others are served meanwhile
    assert not open_socks, f"{len(open_socks)} slow sockets still open after 60 s"
    assert all(status_of(reply) == 408 for reply in replies.values())
    assert set(control) == {200}
    for sock in replies:
        sock.close()
    after = metric(url, "pocketrec_transport_timeouts_total", phase="headers")
    assert after - timeouts_before == 50


def test_a_connection_that_sends_nothing_is_closed_by_the_header_deadline(
    quick_headers: SyncHarness,
) -> None:
    sock = connect(quick_headers.url)
    assert status_of(read_reply(sock)) == 408
    sock.close()


def test_each_request_on_a_kept_alive_connection_has_a_header_deadline(
    quick_headers: SyncHarness,
) -> None:
    sock = connect(quick_headers.url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock) == (200, b'{"status":"ok"}')
    time.sleep(1.5)  # idle longer than the header deadline: keep-alive (30 s) governs this
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0] == 200
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # then a request that stalls
    reply = b""
    deadline = time.monotonic() + 30
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert status_of(reply) == 408


def test_a_body_that_trickles_gets_408_and_nothing_is_stored(tmp_path: Path) -> None:
    with serving(tmp_path / "server", body_timeout=1.0) as server:
        url = server.url
        before = metric(url, "pocketrec_transport_timeouts_total", phase="body")
        token = server.add_device("phone")
        body = json.dumps({"events": [event()]}).encode()
        sock = connect(url)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        reply = b""
        sock.settimeout(0.1)
        for byte in body:  # one byte every 0.1 s: the body takes far longer than 1 s
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            reply += chunk
            if not chunk or b"\r\n\r\n" in reply:
                break
        reply += read_reply(sock)
        sock.close()
        assert status_of(reply) == 408
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"] == "timeout"
        assert server.event_ids() == []
        assert metric(url, "pocketrec_transport_timeouts_total", phase="body") - before == 1
        assert post(HttpClient(url, token), [event()]).status == 200  # a prompt body is fine


def test_connections_over_the_cap_get_503_while_the_open_ones_are_served(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "server", max_connections=4, header_timeout=30.0) as server:
        url = server.url
        refused_before = metric(url, "pocketrec_connections_refused_total")
        held = [connect(url) for _ in range(4)]
        extra = connect(url)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_reply(extra)  # answered and closed
        extra.close()
        assert status_of(reply) == 503
        assert b"\r\nretry-after: 1\r\n" in reply.lower()
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"] == "unavailable"
        for sock in held:  # the connections within the cap are served as usual
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock) == (200, b'{"status":"ok"}')
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 30
        while get(url, "/healthz")[0] != 200:  # the server lets go of the closed ones
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric(url, "pocketrec_connections_refused_total") - refused_before >= 1


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "server", keep_alive_timeout=1, header_timeout=30.0) as server:
        sock = connect(server.url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        assert closed_by_server(sock)
        sock.close()


def test_a_connection_idle_after_a_body_sent_after_its_early_reply_is_still_closed(
    tmp_path: Path,
) -> None:
    """Regression (CI flake, test_sync_keepalive): a 503 answered before the request body had
    arrived; the body came after the reply, which cancelled uvicorn's keep-alive timer for good
    and the idle connection stayed open."""
    with serving(tmp_path / "server", keep_alive_timeout=1, header_timeout=30.0) as server:
        token = server.add_device("phone")
        server.faults.add(Fault(status=503, retry_after="0"))
        body = json.dumps({"events": [event()]}).encode()
        sock = connect(server.url)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        assert read_response(sock)[0] == 503  # answered before a byte of the body was sent
        sock.sendall(body)
        assert closed_by_server(sock, limit=15.0)
        sock.close()
        assert server.event_ids() == []


def test_a_body_trickled_after_its_early_reply_is_cut_off_by_the_body_timeout(
    tmp_path: Path,
) -> None:
    """The rest of a body answered early is read within the body timeout too: each trickled
    byte cancels uvicorn's keep-alive timer, which alone would keep the connection forever."""
    limits = {"body_timeout": 1.0, "keep_alive_timeout": 30, "header_timeout": 30.0}
    with serving(tmp_path / "server", **limits) as server:
        url = server.url
        before = metric(url, "pocketrec_transport_timeouts_total", phase="body")
        token = server.add_device("phone")
        server.faults.add(Fault(status=503, retry_after="0"))
        sock = connect(url)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        assert read_response(sock)[0] == 503
        began, closed = time.monotonic(), False
        while not closed and time.monotonic() - began < 20:  # one byte every 0.2 s
            try:
                sock.sendall(b"x")
            except OSError:
                closed = True
                break
            closed = closed_by_server(sock, limit=0.2)
        sock.close()
        assert closed
        assert metric(url, "pocketrec_transport_timeouts_total", phase="body") - before == 1
        assert server.event_ids() == []


def test_tls_serves_https_and_the_device_client_verifies_the_certificate(
    tmp_path: Path,
) -> None:
    ca, cert, key = write_tls_files(tmp_path / "tls")
    options = ServerOptions(ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = SyncHarness(tmp_path / "server", options=options)
    server.server.start()
    try:
        url = server.url
        assert url.startswith("https://127.0.0.1:")
        token = server.add_device("phone")
        trusted = ssl.create_default_context(cafile=str(ca))
        assert post(HttpClient(url, token, ssl_context=trusted), [event()]).status == 200
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpClient(url, token).request("GET", "/healthz")  # the system trust store
        lax = ssl.create_default_context(cafile=str(ca))
        lax.check_hostname = False
        lax.verify_mode = ssl.CERT_NONE
        with pytest.raises(ValueError, match="must verify"):
            HttpClient(url, token, ssl_context=lax)
        with pytest.raises(NetworkError):  # plain HTTP to the TLS port
            HttpClient(url.replace("https", "http"), token).request("GET", "/healthz")
        with Store.open(tmp_path / "device.sqlite") as store:
            for k in range(3):
                store.append("alice", f"i{k:05d}", "click")
            report = SyncClient(store, url, token, ssl_context=trusted).run()
            assert report.ok, report.error
            assert report.upload.uploaded == 3
        assert len(server.event_ids()) == 4
    finally:
        server.server.stop()
