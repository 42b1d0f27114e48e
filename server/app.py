"""The sync server's HTTP API (Starlette). Every ``/v1`` route but ``/v1/health`` and
``/v1/openapi.json`` needs ``Authorization: Bearer <device token>``; an unknown or revoked token
gets 401 (with ``WWW-Authenticate: Bearer``) and nothing is stored. Errors are JSON ``{"error":
kind, "detail": text}`` (+ ``field`` for 413/422). The OpenAPI document
(``pocketrec.server.openapi``, served at ``/v1/openapi.json``) describes every route.

- ``GET /healthz`` → 200 ``{"status": "ok"}`` while the process runs (no database access);
  ``GET /v1/health`` is the same for older clients.
- ``GET /readyz`` → 200 ``{"status": "ready"}`` when ``storage.ping()`` answers within
  :data:`READY_TIMEOUT` seconds, else 503.
- ``GET /metrics`` → Prometheus metrics (``pocketrec.server.metrics``).
- ``POST /v1/events``, body ``{"events": [...]}`` (``pocketrec.server.validation``) → 200
  ``{"received": n, "new": k, "duplicates": n - k}``; the batch is stored in one transaction and
  each ``event_id`` once, however often it is resent. 413 for a body over 500 KiB (checked on
  ``Content-Length`` before reading, and while reading, so chunked bodies too) or an event over
  32 KiB; 422 naming the failing field; 408 when the body arrives slower than the body timeout.
  Bodies over :data:`PARSE_IN_THREAD_BYTES` are parsed in a worker thread.
- ``GET /v1/bundles/latest`` → 200 ``{"model_version": N, "manifest": base64 of manifest.json's
  bytes, "signature": base64 of their Ed25519 signature}``; 404 when nothing is published.
- ``GET /v1/bundles/{version}/files/{name}`` → the file (200, or 206 for a ``Range: bytes=a-b``
  request, resumable; 416 for a range past the end); 404 for a name the manifest does not list or
  a version that is not a decimal integer below 2^63.
- Admin routes (data requests), with ``Authorization: Bearer <admin token>``
  (``pocketrec.server.admin``; 401 otherwise): ``GET /v1/admin/devices/{device_id}/events
  [?user_id=U]`` → the device's (or its user's) events as JSON lines, streamed
  (``pocketrec.server.data_requests``); ``DELETE`` on the same path erases them → 200
  ``{"erased": n}``; 422 for an id that is not one.

With a rate limit (``pocketrec.server.ratelimit``) an authenticated request over its device's
budget gets 429 with ``Retry-After`` before its body is read. Each request is logged as one JSON
line and counted in the metrics (``pocketrec.server.access_log``).

A database that cannot be reached or fails (``StorageError``) answers 503 ``{"error":
"unavailable"}`` on any route (the device retries later; intake is idempotent); the cause is
logged, not sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pocketrec.core.errors import StorageError
from pocketrec.server import data_requests
from pocketrec.server.access_log import DEVICE_STATE, RequestLog, route_template
from pocketrec.server.admin import AdminToken
from pocketrec.server.auth import AUTH_CACHE_SECONDS, TokenCache, bearer_token
from pocketrec.server.blocking import finish, run_blocking
from pocketrec.server.bundles import BundleRepository
from pocketrec.server.faults import FaultPlan
from pocketrec.server.metrics import CONTENT_TYPE, exposition, server_metrics
from pocketrec.server.openapi import OPENAPI_PATH, document
from pocketrec.server.ratelimit import RateLimit, TokenBuckets
from pocketrec.server.storage import FeedbackStorage, SubmitsEvents
from pocketrec.server.transport import (
    AnswerCancelled,
    BodyDeadline,
    BodyTimeout,
    TransportLimits,
)
from pocketrec.server.validation import MAX_BATCH_BYTES, SchemaViolation, TooLarge, parse_batch

Handler = Callable[[Request, str], Awaitable[Response]]
log = logging.getLogger("pocketrec.server")

BUNDLE_FILE_ROUTE = "/v1/bundles/{version}/files/{name}"
ADMIN_EVENTS_ROUTE = "/v1/admin/devices/{device_id}/events"
ADMIN = "(admin)"
"""What the access log shows as the device of an admin request."""
NDJSON = "application/x-ndjson"
PARSE_IN_THREAD_BYTES = 64 * 1024
"""Bodies at least this large are parsed in a worker thread, off the event loop."""
READY_TIMEOUT = 2.0
"""Seconds ``/readyz`` waits for ``storage.ping()``."""
MAX_VERSION = 2**63 - 1


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` as soon as it is over ``limit`` bytes (the rest is
    not read); a client that goes away raises ``ClientDisconnect`` (as ``Request.stream``)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body += message.get("body", b"")
            if len(body) > limit:
                return None
            if not message.get("more_body", False):
                return bytes(body)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


class AsgiEndpoint:
    """A route endpoint that Starlette calls as a plain ASGI application (it wraps functions in
    a Request and expects a Response)."""

    def __init__(self, call: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.call(scope, receive, send)


def error(status: int, kind: str, detail: str, **extra: object) -> JSONResponse:
    """A JSON error response ``{"error": kind, "detail": detail, ...extra}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": kind, "detail": detail, **extra}, status, headers=headers)


def model_version(text: str) -> int | None:
    """The model version in a URL (ASCII digits, below 2^63), or ``None``."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    version = int(text)
    return version if version <= MAX_VERSION else None


def create_app(
    storage: FeedbackStorage,
    bundles: BundleRepository,
    *,
    faults: FaultPlan | None = None,
    rate_limit: RateLimit | None = None,
    limits: TransportLimits | None = None,
    on_shutdown: Callable[[], None] | None = None,
    admin: AdminToken | None = None,
    retention_days: float | None = None,
    auth_cache_seconds: float = AUTH_CACHE_SECONDS,
) -> Starlette:
    """The ASGI application serving ``storage`` and ``bundles``.

    ``faults``: test-only fault injection for event uploads (``pocketrec.server.faults``);
    ``rate_limit``: per-device request budget (none by default); ``limits``: its body timeout is
    applied (``pocketrec.server.transport``; the other limits act in the protocol);
    ``on_shutdown``: called once when the server shuts down (after in-flight requests finished),
    e.g. to close the storage; ``admin``: the operator's token for the admin routes (without it
    they answer 401); ``retention_days``: drop events older than this at start and then daily
    (``pocketrec.server.data_requests``; needs the lifespan, as ``pocketrec serve`` runs it);
    ``auth_cache_seconds``: how long a checked token is trusted without asking the database
    (``pocketrec.server.auth.TokenCache``; 0: every request asks).
    """
    limits = limits or TransportLimits()
    submit_events = storage.submit_events if isinstance(storage, SubmitsEvents) else None
    buckets = None if rate_limit is None else TokenBuckets(rate_limit)
    metrics = server_metrics()
    tokens = TokenCache(auth_cache_seconds)

    async def device_of(token: str | None) -> str | None:
        if token is None:
            return None
        device = tokens.get(token)
        if device is None:
            device = await run_blocking(storage.authenticate, token)
            if device is not None:
                tokens.put(token, device)
        return device

    async def admit(scope: Scope, headers: Headers) -> Response | str:
        """The request's device, or the 401/429 answer; the device goes to the access log."""
        device = await device_of(bearer_token(headers.get("authorization")))
        if device is None:
            return error(401, "unauthorized", "missing, unknown or revoked device token")
        scope.setdefault("state", {})[DEVICE_STATE] = device
        if buckets is not None:
            wait = buckets.take(device)
            if wait > 0:
                metrics.rate_limited.labels(route_template(scope)).inc()
                reply = error(
                    429, "rate_limited", f"over the device rate limit {rate_limit} "
                    "(requests per second/burst); retry after Retry-After seconds",
                )  # fmt: skip
                reply.headers["Retry-After"] = buckets.retry_after(wait)
                return reply
        return device

    def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            admitted = await admit(request.scope, request.headers)
            if isinstance(admitted, Response):
                return admitted
            return await handler(request, admitted)

        return endpoint

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_request: Request) -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(storage.ping), READY_TIMEOUT)
        except Exception as exc:  # any failure, or no answer in time, means not ready
            log.warning("readiness: the database did not answer: %r", exc)
            return error(503, "unavailable", "the database does not answer")
        return JSONResponse({"status": "ready"})

    async def scrape(_request: Request) -> Response:
        return Response(await run_in_threadpool(exposition), media_type=CONTENT_TYPE)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document())

    async def post_events(scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/events`` as a plain ASGI endpoint (every upload takes it: no Request and
        Response objects on the success path); errors are Starlette responses as elsewhere."""
        headers = Headers(scope=scope)
        admitted = await admit(scope, headers)
        if isinstance(admitted, Response):
            await admitted(scope, receive, send)
            return
        outcome = await store_batch(admitted, headers, receive)
        if isinstance(outcome, Response):
            await outcome(scope, receive, send)
            return
        received, new = outcome
        body = b'{"received":%d,"new":%d,"duplicates":%d}' % (received, new, received - new)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def store_batch(
        device: str, headers: Headers, receive: Receive
    ) -> Response | tuple[int, int]:
        """Read, check and store one upload: ``(received, new)``, or the error answer."""
        fault = faults.next() if faults is not None else None
        if fault is not None and not fault.after_commit:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return JSONResponse(
                    {"error": "injected", "detail": "test fault"}, fault.status, headers=extra
                )
        declared = headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared[:12]) > MAX_BATCH_BYTES:
            return error(413, "too_large", f"body over {MAX_BATCH_BYTES} bytes", field="body")
        body = await read_body(receive, MAX_BATCH_BYTES)
        if body is None:
            return error(413, "too_large", f"body over {MAX_BATCH_BYTES} bytes", field="body")
        try:
            if len(body) >= PARSE_IN_THREAD_BYTES:
                events = await run_blocking(parse_batch, body)
            else:
                events = parse_batch(body)
        except TooLarge as exc:
            return error(413, "too_large", str(exc), field=exc.field)
        except SchemaViolation as exc:
            return error(422, "schema", exc.problem, field=exc.field)
        if submit_events is not None:  # group commit: wait for the batch's commit, no thread
            new = await finish(submit_events(device, events))
        else:
            new = await run_blocking(storage.insert_events, device, events)
        metrics.batch(len(events), new, len(body))
        if fault is not None and fault.after_commit:
            await asyncio.sleep(fault.delay)  # the client gives up waiting: the reply is lost
        return len(events), new

    async def latest_bundle(_request: Request, _device: str) -> Response:
        published = await run_in_threadpool(bundles.latest)
        if published is None:
            return error(404, "not_found", "no bundle is published")
        return JSONResponse(
            {
                "model_version": published.model_version,
                "manifest": base64.b64encode(published.manifest).decode("ascii"),
                "signature": base64.b64encode(published.signature).decode("ascii"),
            }
        )

    async def bundle_file(request: Request, _device: str) -> Response:
        version = model_version(str(request.path_params["version"]))
        name = str(request.path_params["name"])
        if version is None:
            return error(404, "not_found", "no such bundle version")
        path = await run_in_threadpool(bundles.file_path, version, name)
        if path is None or not path.is_file():
            return error(404, "not_found", f"bundle {version} has no file {name!r}")
        return FileResponse(path, media_type="application/octet-stream")

    def admin_only(
        handler: Callable[[Request, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if admin is None or not admin.matches(
                bearer_token(request.headers.get("authorization"))
            ):
                detail = "missing or wrong admin token"
                if admin is None:
                    detail += " (this server was started without --admin-token-file)"
                return error(401, "unauthorized", detail)
            setattr(request.state, DEVICE_STATE, ADMIN)
            return await handler(request, str(request.path_params["device_id"]))

        return endpoint

    async def export_device(request: Request, device_id: str) -> Response:
        user_id = request.query_params.get("user_id")
        try:
            lines = data_requests.json_lines(storage, device_id, user_id)
        except data_requests.InvalidId as exc:
            return error(422, "schema", str(exc), field=exc.field)
        return StreamingResponse(lines, media_type=NDJSON)

    async def erase_device(request: Request, device_id: str) -> Response:
        user_id = request.query_params.get("user_id")
        try:
            erased = await run_in_threadpool(data_requests.erase, storage, device_id, user_id)
        except data_requests.InvalidId as exc:
            return error(422, "schema", str(exc), field=exc.field)
        log.info(
            "data request: erased %d events of device %r (user %r)", erased, device_id, user_id
        )
        return JSONResponse({"erased": erased})

    async def retention_loop(days: float) -> None:
        while True:
            try:
                done = await run_in_threadpool(data_requests.apply_retention, storage, days)
                log.info("retention (%s days): %d events dropped", days, done.events)
            except StorageError as exc:  # the database is away: try again at the next round
                log.warning("retention failed: %s", exc)
            await asyncio.sleep(data_requests.DAY_SECONDS)

    async def body_timeout(_request: Request, exc: Exception) -> Response:
        reply = error(408, "timeout", str(exc))
        reply.headers["Connection"] = "close"
        return reply

    async def client_gone(_request: Request, _exc: Exception) -> Response:
        return error(499, "client_closed", "the client closed the connection")  # never sent

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = (
            None if retention_days is None else asyncio.create_task(retention_loop(retention_days))
        )
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/events", AsgiEndpoint(post_events), methods=["POST"]),
        Route("/v1/bundles/latest", authenticated(latest_bundle), methods=["GET"]),
        Route(BUNDLE_FILE_ROUTE, authenticated(bundle_file), methods=["GET"]),
        Route(ADMIN_EVENTS_ROUTE, admin_only(export_device), methods=["GET"]),
        Route(ADMIN_EVENTS_ROUTE, admin_only(erase_device), methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestLog, downloads_route=BUNDLE_FILE_ROUTE),
            Middleware(AnswerCancelled),
            Middleware(BodyDeadline, timeout=limits.body_timeout),
        ],
        exception_handlers={
            BodyTimeout: body_timeout,
            ClientDisconnect: client_gone,
            StorageError: storage_failed,
        },
        lifespan=lifespan,
    )


async def storage_failed(request: Request, exc: Exception) -> Response:
    """503 for a database that failed (the cause goes to the log, not to the device)."""
    log.warning("%s %s: database failed: %s", request.method, request.url.path, exc)
    return error(503, "unavailable", "the database is unavailable; retry later")
