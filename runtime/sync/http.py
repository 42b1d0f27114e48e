"""A minimal HTTP client for the sync protocol on the standard library (``http.client``): no
proxies, no redirects, a timeout on every socket operation, and HTTP/1.1 keep-alive (the requests
of one sync pass share one connection: one TCP and, with TLS, one handshake per pass instead of
one per request).

Network problems (refused, reset, DNS, TLS, a timeout) raise :class:`NetworkError`; any HTTP
status is returned as a :class:`Response` (the caller decides what is retryable).
"""

from __future__ import annotations

import http.client
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlsplit

from pocketrec import __version__
from pocketrec.core.errors import SyncError
from pocketrec.core.wire import DOWNLOAD_CHUNK_BYTES

USER_AGENT = f"pocketrec/{__version__}"

MAX_IDLE_CONNECTIONS = 4
"""Idle keep-alive connections a client holds at most (one per thread using it at once)."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods whose requests may be sent twice (RFC 9110, 9.2.2); a ``POST`` only when the caller
says so (``idempotent=True``)."""


class NetworkError(SyncError):
    """The request did not get an HTTP response (connection refused or reset, timeout, ...)."""


@dataclass(frozen=True)
class Response:
    """An HTTP response; header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def error_text(self) -> str:
        """``HTTP <status>: <server's detail>`` for messages and reports."""
        text = self.body[:500].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}" + (f": {text}" if text else "")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpClient:
    """Requests to one sync server ``base_url`` with a device ``token``; ``timeout`` seconds per
    socket operation (connect, each send and read).

    ``https://`` is required, except for a loopback host (tests, a local server) or when the app
    opts in with ``allow_http=True`` (the token and the events would cross the network in clear
    text); anything else raises ``ValueError``. Certificates are verified against the system's
    trust store; ``ssl_context`` replaces it (e.g. a private CA:
    ``ssl.create_default_context(cafile=...)``) but must still verify the certificate and the
    host name (``ValueError`` otherwise).

    **Connections.** A connection whose response was read to the end is kept open and reused by
    the next request (HTTP/1.1 keep-alive); :meth:`close` (``SyncClient`` calls it at the end of
    every pass) closes it, and the next request opens a new one. Any error, a response the
    server ends with ``Connection: close`` and a download stopped before its end close the
    connection instead. Before a kept connection is reused it is checked: one the server has
    closed meanwhile (its keep-alive timeout, a restart) is replaced by a new one before
    anything is sent. If a reused connection still fails before any byte of the response
    arrives (the server closed it while the request was on its way), the request is sent once
    more on a new connection, **only** when it is idempotent: ``GET`` and the like, or a
    request the caller marks ``idempotent=True`` (an upload is: the server stores each
    ``event_id`` once). A timeout is never resent here (the caller's retry policy decides), nor
    is anything once a response's status line has arrived: a download cut during its body is
    resumed by the caller from what reached the file.

    **Threads.** Thread-safe: each request takes a kept connection that no other request is
    using (or opens one) and gives it back when done, so threads never share a socket at the
    same time; at most :data:`MAX_IDLE_CONNECTIONS` are kept. ``SyncClient`` uses its client
    from one thread at a time (one pass at a time), so a device holds one connection."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        allow_http: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http:// or https:// with a host, got {base_url!r}")
        if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
            raise ValueError(
                f"refusing plain http:// to {parts.hostname}: the device token and events would "
                "travel unencrypted; use https://, or pass allow_http=True to opt in explicitly"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if ssl_context is not None and not (
            ssl_context.verify_mode == ssl.CERT_REQUIRED and ssl_context.check_hostname
        ):
            raise ValueError("ssl_context must verify certificates (CERT_REQUIRED) and host names")
        self._ssl_context = ssl_context
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = float(timeout)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by close(): connections taken before it are not kept

    # ------------------------------------------------------------------ connections

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _take(self) -> tuple[http.client.HTTPConnection, int, bool]:
        """A connection for one request, the epoch it was taken in, and whether it is a kept
        one (already used); a kept one the server has closed is dropped on the way."""
        while True:
            with self._lock:
                epoch = self._epoch
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._new_connection(), epoch, False
            if _usable(conn):
                return conn, epoch, True
            conn.close()

    def _give_back(self, conn: http.client.HTTPConnection, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the kept connections (and any in use, once its request ends). The client
        stays usable: the next request opens a new connection."""
        with self._lock:
            self._epoch += 1
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}", "User-Agent": USER_AGENT}
        headers.update(extra or {})
        return headers

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        idempotent: bool,
    ) -> tuple[http.client.HTTPConnection, int, http.client.HTTPResponse]:
        """Send the request and read the response's status line and headers, on a kept
        connection or a new one; a kept connection that fails before the status line is
        replaced once by a new one for an idempotent request (the class docstring). Raises
        ``OSError``/``http.client.HTTPException`` with the failed connection closed."""
        conn, epoch, reused = self._take()
        try:
            return conn, epoch, self._exchange(conn, method, path, body, headers)
        except _CLOSED:  # reset, broken pipe, closed before the status line
            conn.close()
            if not (reused and idempotent):
                raise
        except BaseException:
            conn.close()
            raise
        conn = self._new_connection()
        try:
            return conn, epoch, self._exchange(conn, method, path, body, headers)
        except BaseException:
            conn.close()
            raise

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> http.client.HTTPResponse:
        conn.request(method, self._prefix + path, body=body, headers=self._headers(headers))
        return conn.getresponse()

    def _finish(
        self, conn: http.client.HTTPConnection, epoch: int, reply: http.client.HTTPResponse
    ) -> None:
        """Keep ``conn`` if ``reply`` was read to its end and the server keeps it open (a body
        cut short by the server leaves ``length`` above 0: ``read(n)`` returns ``b""`` then)."""
        complete = reply.isclosed() and not reply.length
        if complete and not reply.will_close and conn.sock is not None:
            self._give_back(conn, epoch)
        else:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """One request; the whole response body is read. ``idempotent``: may the request be
        sent twice (default: by its method, :data:`IDEMPOTENT_METHODS`)? Only then is it resent
        on a new connection when a kept one turns out closed (class docstring). Raises
        :class:`NetworkError`."""
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        conn: http.client.HTTPConnection | None = None
        try:
            conn, epoch, reply = self._open(method, path, body, headers, idempotent)
            data = reply.read()
            response = Response(reply.status, _lower(reply.getheaders()), data)
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            raise NetworkError(f"{method} {path}: {_describe(exc)}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._finish(conn, epoch, reply)
        return response

    def post_json(self, path: str, body: bytes, *, idempotent: bool = False) -> Response:
        """``POST`` a JSON body; ``idempotent`` as in :meth:`request`."""
        return self.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json"},
            idempotent=idempotent,
        )

    def download(
        self,
        path: str,
        dest: Path,
        *,
        limit: int,
        chunk_bytes: int = DOWNLOAD_CHUNK_BYTES,
        progress: Callable[[int], None] | None = None,
    ) -> Response:
        """Download ``path`` into ``dest``, resuming after the bytes already in ``dest`` with a
        ``Range`` request. Returns the response with an empty body (2xx: ``dest`` holds the
        file, possibly partially if the connection dropped: call again), or the error response
        (``dest`` untouched). Stops reading past ``limit`` bytes in total (a longer file cannot
        be the expected one). ``progress(bytes in dest)`` is called after each chunk is
        written. Raises :class:`NetworkError` (``dest`` keeps what arrived, for resuming).

        A kept connection found closed before the response's status line is replaced once (a
        ``GET``; nothing was written yet, so the same ``Range`` is right). Once the status line
        is in, nothing is resent from here: a connection cut during the body raises or returns
        the 2xx with ``dest`` short, and the caller's next call resumes from ``dest``; the
        connection is not kept.
        """
        have = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn: http.client.HTTPConnection | None = None
        try:
            conn, epoch, reply = self._open("GET", path, None, headers, True)
            status = reply.status
            if status == 416 and have:
                reply.read()
                response = Response(status, _lower(reply.getheaders()), b"")
            elif status not in (200, 206):
                response = Response(status, _lower(reply.getheaders()), reply.read())
            else:
                mode = "ab" if status == 206 else "wb"  # 200: the server sent the whole file
                written = have if status == 206 else 0
                with dest.open(mode) as fh:
                    while written <= limit:
                        chunk = reply.read(min(chunk_bytes, limit + 1 - written))
                        if not chunk:
                            break
                        fh.write(chunk)
                        fh.flush()
                        written += len(chunk)
                        if progress is not None:
                            progress(written)
                response = Response(status, _lower(reply.getheaders()), b"")
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            raise NetworkError(f"GET {path}: {_describe(exc)}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._finish(conn, epoch, reply)  # kept only if the body was read to its end
        return response


_CLOSED = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
"""How a connection the server closed fails (``RemoteDisconnected`` is a ``ConnectionError``)."""


def file_path(version: int, name: str) -> str:
    """The URL path of a bundle file."""
    return f"/v1/bundles/{int(version)}/files/{quote(name, safe='')}"


def _usable(conn: http.client.HTTPConnection) -> bool:
    """False when a kept connection's socket is gone or readable: between two requests the
    server sends nothing, so a readable socket means it closed (or reset) the connection."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable
    except (OSError, ValueError):
        return False


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
