"""Transport limits of the sync server: header and body read timeouts, a connection cap.

uvicorn (h11) keeps a connection for as long as the client trickles bytes: it has a keep-alive
timeout between requests but no deadline for a request's headers or body, and its
``limit_concurrency`` counts the connection asking against the limit too, so once the limit is
reached every connection is answered 503, old ones included. :class:`GuardedH11Protocol` (uvicorn's
h11 protocol with two additions) and :class:`BodyDeadline` (ASGI middleware) add, per worker:

- **header timeout**: a new connection, and any request once its first byte has arrived, must
  deliver its request line and headers within ``header_timeout`` seconds (a deadline, not an idle
  timer: one byte a second does not keep it alive), else the server answers 408 and closes;
- **body timeout**: the whole request body must arrive within ``body_timeout`` seconds of the
  headers, else 408 (``{"error": "timeout"}``) and the connection is closed; nothing is stored;
  the rest of a body answered early (401, 413, 429, 503 before it was read) is read and dropped
  within ``body_timeout`` seconds of the reply too, else the connection is closed;
- **header size**: at most h11's 16 KiB (uvicorn's ``h11_max_incomplete_event_size``) however
  the bytes arrive (h11 alone checks it only while it waits for more), else 400;
- **max connections**: a connection opened while ``max_connections`` are already open is
  answered 503 with ``Retry-After: 1`` as soon as its headers are in, without running the
  application, and closed; the connections already open are served as usual;
- keep-alive: uvicorn's own ``timeout_keep_alive`` between requests on one connection, also
  after a response sent before its request body had all arrived (uvicorn loses the timer then).

The limits travel in :class:`ServerConfig` (a ``uvicorn.Config``), which uvicorn hands to every
protocol instance and pickles into worker processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pocketrec.server.metrics import server_metrics

log = logging.getLogger("pocketrec.server.transport")

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers, at most (h11's default, which uvicorn keeps unless configured)."""


@dataclass(frozen=True)
class TransportLimits:
    """Per-worker transport limits (seconds, connections); see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: int = 5
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 86400):
                raise ValueError(f"{name} must be > 0 and < 86400 seconds, got {value!r}")
        for name, least in (("keep_alive_timeout", 1), ("max_connections", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServerConfig(uvicorn.Config):
    """``uvicorn.Config`` serving with :class:`GuardedH11Protocol` under ``limits``."""

    def __init__(self, app: Any, *, limits: TransportLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=GuardedH11Protocol,
            timeout_keep_alive=limits.keep_alive_timeout,
            **kwargs,
        )
        self.limits = limits


def _raw_response(status: int, reason: str, error: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class _Deadline:
    """A connection's one-shot timer: :meth:`arm` starts it unless it is pending (a deadline, not
    an idle timer: arming it again does not push it back), :meth:`disarm` cancels it, and
    ``expire`` runs when it fires."""

    def __init__(self, protocol: H11Protocol, seconds: float, expire: Callable[[], None]) -> None:
        self._protocol, self._seconds, self._expire = protocol, seconds, expire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self._handle is None and not self._protocol.transport.is_closing():
            self._handle = self._protocol.loop.call_later(self._seconds, self._fire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._expire()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header deadline and the connection cap (module doc)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "limits", None)
        self.limits = limits if isinstance(limits, TransportLimits) else TransportLimits()
        self._header_deadline = _Deadline(self, self.limits.header_timeout, self._headers_too_slow)
        self._drain_deadline = _Deadline(self, self.limits.body_timeout, self._drain_too_slow)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            server_metrics().connections_refused.inc()
            self.app = over_capacity  # answered once its headers are in; never runs the app
        self._header_deadline.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline.disarm()
        self._drain_deadline.disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY:  # an early reply: the body is still coming
            self._drain_deadline.arm()

    def data_received(self, data: bytes) -> None:
        # h11 checks its header-size limit only while it waits for more data, so headers that
        # arrive in one read would pass at any size: feed them in pieces of at most the limit.
        step = self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES
        while len(data) > step and self.conn.their_state is h11.IDLE:
            super().data_received(data[:step])
            data = data[step:]
            if self.transport.is_closing():
                return
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._header_deadline.disarm()  # the headers are in (a body may follow)
            return
        self._drain_deadline.disarm()
        if self.conn.trailing_data[0]:
            self._header_deadline.arm()  # part of the next request has arrived
        else:
            self._rearm_keep_alive()

    def _rearm_keep_alive(self) -> None:
        # uvicorn arms the keep-alive timer when a response completes and cancels it whenever
        # data arrives; when the rest of a request body arrives after its response (an early
        # 401/503), h11 starts the next cycle without re-arming it, and the idle connection
        # would then stay open for good. Between requests, an idle connection has the timer.
        cycle = self.cycle
        if (
            self.timeout_keep_alive_task is None
            and cycle is not None
            and cycle.response_complete
            and self.conn.our_state is h11.IDLE
            and not self.transport.is_closing()
        ):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _drain_too_slow(self) -> None:
        # The rest of a body answered early must come within the body timeout too: the data
        # that drains it cancels uvicorn's keep-alive timer, so that alone would let a client
        # that trickles it hold the connection for as long as it likes.
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        self._close_late("body", "the body of a request answered early", self.limits.body_timeout)

    def _headers_too_slow(self) -> None:
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        seconds = self.limits.header_timeout
        detail = f"request headers not complete within {seconds:g} s"
        reply = _raw_response(408, "Request Timeout", "timeout", detail)
        self._close_late("headers", "request headers", seconds, reply)

    def _close_late(self, phase: str, what: str, seconds: float, reply: bytes = b"") -> None:
        """Count a transport timeout of ``phase``, log it, send ``reply`` (if any) and close."""
        server_metrics().transport_timeouts.labels(phase).inc()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("closed %s: %s not complete within %gs", client, what, seconds)
        if reply:
            self.transport.write(reply)
        self.transport.close()


async def over_capacity(
    scope: Scope, receive: Receive, send: Send, *, detail: str = "too many open connections"
) -> None:
    """The ASGI app answering a connection over the cap: 503, ``Retry-After: 1``, close."""
    body = json.dumps({"error": "unavailable", "detail": f"{detail}; retry later"}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AnswerCancelled:
    """ASGI middleware: a request the server cancels (its shutdown's graceful timeout ran out)
    is answered 503 with ``Retry-After: 1`` and ``Connection: close`` if nothing was sent yet,
    rather than uvicorn's 500 and a traceback; the client retries it elsewhere or later. The
    cancellation ends there (the request is over), logged as one line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except asyncio.CancelledError:
            if scope["type"] != "http" or started:
                raise
            log.warning("%s %s cancelled by the shutdown; answered 503", scope["method"],
                        scope["path"][:200])  # fmt: skip
            await over_capacity(scope, receive, send, detail="the server is shutting down")
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python >= 3.11
                task.uncancel()


_timeout_at = getattr(asyncio, "timeout_at", None)


class BodyTimeout(Exception):
    """The request body did not arrive within the body timeout (answered 408)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request body not complete within {seconds:g} s")
        self.seconds = seconds


class BodyDeadline:
    """ASGI middleware: while a request's body is incomplete, ``receive()`` raises
    :class:`BodyTimeout` once ``timeout`` seconds have passed since the request reached the
    application. Once the body is complete, ``receive()`` is passed through untouched."""

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False

        async def receive_by_deadline() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                if _timeout_at is not None:  # Python >= 3.11: no task per receive()
                    async with _timeout_at(deadline):
                        message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                server_metrics().transport_timeouts.labels("body").inc()
                raise BodyTimeout(self.timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, receive_by_deadline, send)
