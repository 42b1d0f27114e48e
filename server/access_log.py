"""One structured JSON access-log line and the request metrics per HTTP request.

:class:`RequestLog` (ASGI middleware, inside the router's reach so it sees the matched route)
times every request and, once it is answered, logs one line on the ``pocketrec.server.access``
logger (INFO), a JSON object::

    {"time": "2026-05-01T12:00:00.123Z", "method": "POST", "route": "/v1/events", "status": 200,
     "duration_ms": 4.2, "bytes_in": 5120, "bytes_out": 45, "device": "phone-1",
     "client": "10.0.0.7:53122", "pid": 4242}

``route`` is the route template (never the raw path, so nothing a client puts in a URL reaches
the log, and ``<unmatched>`` for paths that match no route); ``device`` is the authenticated
device id (``null`` before authentication or when it failed); ``bytes_in``/``bytes_out`` count
body bytes; ``pid`` is the worker process. Headers are never logged, so neither is the
``Authorization`` token. ``status`` 499 means the client went away before it could be answered
(nothing was sent). The same figures feed ``pocketrec.server.metrics``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocketrec.server.metrics import UNMATCHED_ROUTE, server_metrics

ACCESS_LOGGER = "pocketrec.server.access"
DEVICE_STATE = "device"
"""Key of ``request.state`` (``scope["state"]``) holding the authenticated device id."""

log = logging.getLogger(ACCESS_LOGGER)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted under their own name in the metrics (any other is ``OTHER``)."""


def route_template(scope: Scope) -> str:
    """The template of the route that matched (``/v1/bundles/{version}/files/{name}``)."""
    route = scope.get("route")
    return route.path if isinstance(route, Route) else UNMATCHED_ROUTE


class RequestLog:
    """ASGI middleware: the access-log line and the request metrics (module docstring).

    ``downloads_route``: the route template of bundle files, whose 200/206 answers are counted
    as bundle downloads by their ``version`` and ``name`` path parameters.
    """

    def __init__(self, app: ASGIApp, *, downloads_route: str | None = None) -> None:
        self.app = app
        self.downloads_route = downloads_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = server_metrics()
        start = time.perf_counter()
        status = 0
        bytes_in = bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        metrics.in_progress.inc()
        try:
            await self.app(scope, counting_receive, observing_send)
        except BaseException:
            status = status or 500
            raise
        finally:
            metrics.in_progress.dec()
            seconds = time.perf_counter() - start
            route = route_template(scope)
            method = str(scope["method"])
            if method not in KNOWN_METHODS:
                method = "OTHER"  # clients choose methods: keep the metric's labels bounded
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.duration.labels(method, route).observe(seconds)
            if route == self.downloads_route and status in (200, 206):
                params = scope.get("path_params", {})
                metrics.bundle_downloads.labels(
                    str(params.get("version")), str(params.get("name")), str(status)
                ).inc()
            if log.isEnabledFor(logging.INFO):  # (no caller lookup: the line says it all)
                line = _line(scope, route, status, seconds, bytes_in, bytes_out)
                log.handle(log.makeRecord(log.name, logging.INFO, "", 0, line, (), None))


def _line(
    scope: Scope, route: str, status: int, seconds: float, bytes_in: int, bytes_out: int
) -> str:
    state: dict[str, Any] = scope.get("state") or {}
    client = scope.get("client")
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z",
        "method": str(scope["method"])[:16],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000.0, 2),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "device": state.get(DEVICE_STATE),
        "client": f"{client[0]}:{client[1]}" if client else None,
        "pid": os.getpid(),
    }
    return _ENCODER.encode(record)


_ENCODER = json.JSONEncoder(ensure_ascii=False)
"""``json.dumps(..., ensure_ascii=False)`` would build an encoder for every line."""
