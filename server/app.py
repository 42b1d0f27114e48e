"""The sync server's HTTP API (Starlette). Every ``/v1`` route but ``/v1/health`` needs
``Authorization: Bearer <device token>``; an unknown or revoked token gets 401 (with
``WWW-Authenticate: Bearer``) and nothing is stored. Errors are JSON ``{"error": kind,
"detail": text}`` (+ ``field`` for 413/422).

- ``GET /v1/health`` → 200 ``{"status": "ok"}``.
- ``POST /v1/events``, body ``{"events": [...]}`` (``pocketrec.server.validation``) → 200
  ``{"received": n, "new": k, "duplicates": n - k}``; the batch is stored in one transaction and
  each ``event_id`` once, however often it is resent. 413 for a body over 500 KiB (checked on
  ``Content-Length`` before reading, and while reading) or an event over 32 KiB; 422 naming the
  failing field.
- ``GET /v1/bundles/latest`` → 200 ``{"model_version": N, "manifest": base64 of manifest.json's
  bytes, "signature": base64 of their Ed25519 signature}``; 404 when nothing is published.
- ``GET /v1/bundles/{version}/files/{name}`` → the file (200, or 206 for a ``Range: bytes=a-b``
  request, resumable; 416 for a range past the end); 404 for a name the manifest does not list.

A database that cannot be reached or fails (``StorageError``) answers 503 ``{"error":
"unavailable"}`` on any route (the device retries later; intake is idempotent); the cause is
logged, not sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from pocketrec.core.errors import StorageError
from pocketrec.server.auth import bearer_token
from pocketrec.server.bundles import BundleRepository
from pocketrec.server.faults import FaultPlan
from pocketrec.server.storage import FeedbackStorage
from pocketrec.server.validation import MAX_BATCH_BYTES, SchemaViolation, TooLarge, parse_batch

Handler = Callable[[Request, str], Awaitable[Response]]
log = logging.getLogger("pocketrec.server")


def error(status: int, kind: str, detail: str, **extra: object) -> JSONResponse:
    """A JSON error response ``{"error": kind, "detail": detail, ...extra}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": kind, "detail": detail, **extra}, status, headers=headers)


def create_app(
    storage: FeedbackStorage, bundles: BundleRepository, *, faults: FaultPlan | None = None
) -> Starlette:
    """The ASGI application serving ``storage`` and ``bundles``; ``faults``: test-only fault
    injection for event uploads (see ``pocketrec.server.faults``)."""

    def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            device = None if token is None else await run_in_threadpool(storage.authenticate, token)
            if device is None:
                return error(401, "unauthorized", "missing, unknown or revoked device token")
            return await handler(request, device)

        return endpoint

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def post_events(request: Request, device: str) -> Response:
        fault = faults.next() if faults is not None else None
        if fault is not None and not fault.after_commit:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return JSONResponse(
                    {"error": "injected", "detail": "test fault"}, fault.status, headers=headers
                )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
            return error(413, "too_large", f"body over {MAX_BATCH_BYTES} bytes", field="body")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BATCH_BYTES:
                return error(413, "too_large", f"body over {MAX_BATCH_BYTES} bytes", field="body")
        try:
            events = parse_batch(bytes(body))
        except TooLarge as exc:
            return error(413, "too_large", str(exc), field=exc.field)
        except SchemaViolation as exc:
            return error(422, "schema", exc.problem, field=exc.field)
        new = await run_in_threadpool(storage.insert_events, device, events)
        if fault is not None and fault.after_commit:
            await asyncio.sleep(fault.delay)  # the client gives up waiting: the reply is lost
        return JSONResponse({"received": len(events), "new": new, "duplicates": len(events) - new})

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
        version = int(request.path_params["version"])
        name = str(request.path_params["name"])
        path = await run_in_threadpool(bundles.file_path, version, name)
        if path is None or not path.is_file():
            return error(404, "not_found", f"bundle {version} has no file {name!r}")
        return FileResponse(path, media_type="application/octet-stream")

    routes = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/events", authenticated(post_events), methods=["POST"]),
        Route("/v1/bundles/latest", authenticated(latest_bundle), methods=["GET"]),
        Route(
            "/v1/bundles/{version:int}/files/{name:str}",
            authenticated(bundle_file),
            methods=["GET"],
        ),
    ]
    return Starlette(routes=routes, exception_handlers={StorageError: storage_failed})


async def storage_failed(request: Request, exc: Exception) -> Response:
    """503 for a database that failed (the cause goes to the log, not to the device)."""
    log.warning("%s %s: database failed: %s", request.method, request.url.path, exc)
    return error(503, "unavailable", "the database is unavailable; retry later")
