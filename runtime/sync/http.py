"""A minimal HTTP client for the sync protocol on the standard library (``http.client``): no
proxies, no redirects, one connection per request, a timeout on every socket operation.

Network problems (refused, reset, DNS, TLS, a timeout) raise :class:`NetworkError`; any HTTP
status is returned as a :class:`Response` (the caller decides what is retryable).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from pocketrec import __version__
from pocketrec.core.errors import SyncError
from pocketrec.core.wire import DOWNLOAD_CHUNK_BYTES

USER_AGENT = f"pocketrec/{__version__}"


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
    socket operation (connect, each read).

    ``https://`` is required, except for a loopback host (tests, a local server) or when the app
    opts in with ``allow_http=True`` (the token and the events would cross the network in clear
    text); anything else raises ``ValueError``. Certificates are verified against the system's
    trust store; ``ssl_context`` replaces it (e.g. a private CA:
    ``ssl.create_default_context(cafile=...)``) but must still verify the certificate and the
    host name (``ValueError`` otherwise)."""

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

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}", "User-Agent": USER_AGENT}
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One request; the whole response body is read. Raises :class:`NetworkError`."""
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=body, headers=self._headers(headers))
            reply = conn.getresponse()
            data = reply.read()
            return Response(reply.status, _lower(reply.getheaders()), data)
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(f"{method} {path}: {_describe(exc)}") from exc
        finally:
            conn.close()

    def post_json(self, path: str, body: bytes) -> Response:
        """``POST`` a JSON body."""
        return self.request("POST", path, body=body, headers={"Content-Type": "application/json"})

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
        written. Raises :class:`NetworkError` (``dest`` keeps what arrived, for resuming)."""
        have = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn = self._connection()
        try:
            conn.request("GET", self._prefix + path, headers=self._headers(headers))
            reply = conn.getresponse()
            status = reply.status
            if status == 416 and have:
                reply.read()
                return Response(status, _lower(reply.getheaders()), b"")
            if status not in (200, 206):
                return Response(status, _lower(reply.getheaders()), reply.read())
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
            return Response(status, _lower(reply.getheaders()), b"")
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(f"GET {path}: {_describe(exc)}") from exc
        finally:
            conn.close()


def file_path(version: int, name: str) -> str:
    """The URL path of a bundle file."""
    return f"/v1/bundles/{int(version)}/files/{quote(name, safe='')}"


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
