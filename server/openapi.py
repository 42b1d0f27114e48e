"""The OpenAPI 3.1 document of the sync server's HTTP API: the one source of it.

Served at ``GET /v1/openapi.json``; ``python -m pocketrec.server.openapi`` prints it. The limits in
it come from ``pocketrec.core.wire`` (the module the device and the server share), the event types
from ``pocketrec.core.events``. ``tests/test_server_openapi.py`` checks that every route of the
application is documented and every documented operation exists, and runs schemathesis against a
real server: no 5xx, and every response's status, content type, headers and body as documented.
"""

from __future__ import annotations

import json
from typing import Any

from pocketrec import __version__
from pocketrec.core import wire
from pocketrec.core.events import EVENT_NAMES

JSON = "application/json"
OPENAPI_PATH = "/v1/openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **headers: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        reply["headers"] = {name: {"$ref": f"#/components/headers/{ref}"} for name, ref in
                            headers.items()}  # fmt: skip
    return reply


def _error(description: str, **headers: str) -> dict[str, Any]:
    return _json(_ref("Error"), description, **headers)


_UNAVAILABLE = _error(
    "The database is unavailable, or too many connections are open; retry after a while",
    **{"Retry-After": "RetryAfter"},
)
_UNAUTHORIZED = _error(
    "Missing, unknown or revoked device token", **{"WWW-Authenticate": "WWWAuthenticate"}
)
_RATE_LIMITED = _error(
    "The device's rate limit is exhausted (`--rate-limit`); retry after `Retry-After` seconds",
    **{"Retry-After": "RetryAfter"},
)

_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": wire.MAX_ID_BYTES,
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
    "description": f"At most {wire.MAX_ID_BYTES} bytes of UTF-8, no control characters",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "kind: unauthorized, schema, ..."},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "the failing field (413, 422)"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
    },
    "Event": {
        "type": "object",
        "required": ["event_id", "user_id", "item_id", "event_type", "timestamp"],
        "description": (
            f"One feedback event; at most {wire.MAX_EVENT_BYTES} bytes as "
            "`pocketrec.core.wire.event_size` counts it. Unknown fields are ignored."
        ),
        "properties": {
            "event_id": {
                "type": "string",
                "format": "uuid",
                "description": "Idempotency key: each event_id is stored once (canonical form)",
            },
            "seq": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**63 - 1},
            "user_id": _ID,
            "item_id": _ID,
            "event_type": {"type": "string", "enum": list(EVENT_NAMES)},
            "timestamp": {
                "type": "number",
                "minimum": 0,
                "maximum": wire.MAX_TIMESTAMP,
                "description": "Seconds since the epoch (UTC), up to the year 3000",
            },
            "context": {
                "type": ["object", "null"],
                "description": f"Any JSON object nested at most {wire.MAX_JSON_DEPTH} levels",
            },
        },
    },
    "Batch": {
        "type": "object",
        "required": ["events"],
        "description": f"At most {wire.MAX_BATCH_BYTES} bytes of UTF-8 JSON, however framed",
        "properties": {"events": {"type": "array", "items": _ref("Event")}},
    },
    "BatchAck": {
        "type": "object",
        "required": ["received", "new", "duplicates"],
        "properties": {
            "received": {"type": "integer", "minimum": 0},
            "new": {"type": "integer", "minimum": 0, "description": "stored now"},
            "duplicates": {"type": "integer", "minimum": 0, "description": "stored before"},
        },
    },
    "StoredEvent": {
        "type": "object",
        "required": ["event_id", "device_id", "user_id", "item_id", "event_type", "timestamp"],
        "description": "One line of a data-request export (JSON lines)",
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "device_id": {"type": "string"},
            "seq": {"type": ["integer", "null"]},
            "user_id": {"type": "string"},
            "item_id": {"type": "string"},
            "event_type": {"type": "string", "enum": list(EVENT_NAMES)},
            "timestamp": {"type": "number"},
            "context": {"type": ["object", "null"]},
        },
    },
    "Erased": {
        "type": "object",
        "required": ["erased"],
        "properties": {"erased": {"type": "integer", "minimum": 0}},
    },
    "LatestBundle": {
        "type": "object",
        "required": ["model_version", "manifest", "signature"],
        "properties": {
            "model_version": {"type": "integer", "minimum": 0},
            "manifest": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "The exact bytes of the bundle's manifest.json",
            },
            "signature": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "Ed25519 signature of the manifest bytes (64 bytes)",
            },
        },
    },
}

HEADERS: dict[str, Any] = {
    "RetryAfter": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWWAuthenticate": {"schema": {"type": "string", "enum": ["Bearer"]}},
    "ContentRange": {"schema": {"type": "string"}},
}

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "liveness",
            "summary": "The process is up (no database access)",
            "tags": ["operations"],
            "responses": {"200": _json(_ref("Status"), "Alive"), "503": _UNAVAILABLE},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readiness",
            "summary": "The database answers (`FeedbackStorage.ping`)",
            "tags": ["operations"],
            "responses": {
                "200": _json(_ref("Status"), "Ready to serve"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text format 0.0.4)",
            "tags": ["operations"],
            "responses": {
                "200": {"description": "The metrics", "content": _TEXT},
                "503": _UNAVAILABLE,
            },
        }
    },
    OPENAPI_PATH: {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["operations"],
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness for older clients (as /healthz)",
            "tags": ["operations"],
            "deprecated": True,
            "responses": {"200": _json(_ref("Status"), "Alive"), "503": _UNAVAILABLE},
        }
    },
    "/v1/events": {
        "post": {
            "operationId": "uploadEvents",
            "summary": "Upload a batch of feedback events (idempotent on event_id)",
            "tags": ["sync"],
            "security": [{"deviceToken": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Batch")}}},
            "responses": {
                "200": _json(_ref("BatchAck"), "Stored in one transaction"),
                "401": _UNAUTHORIZED,
                "408": _error("The body did not arrive within the body timeout"),
                "413": _error("The body or one event is over its size limit (`field` says)"),
                "422": _error("Not valid UTF-8 JSON or not the schema (`field` names it)"),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/bundles/latest": {
        "get": {
            "operationId": "latestBundle",
            "summary": "The latest published bundle's signed manifest",
            "tags": ["sync"],
            "security": [{"deviceToken": []}],
            "responses": {
                "200": _json(_ref("LatestBundle"), "The latest bundle"),
                "401": _UNAUTHORIZED,
                "404": _error("Nothing is published"),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/bundles/{version}/files/{name}": {
        "get": {
            "operationId": "bundleFile",
            "summary": "A file of a published bundle, resumable with Range",
            "tags": ["sync"],
            "security": [{"deviceToken": []}],
            "parameters": [
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    "example": 1,
                },
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                    "example": "manifest.json",
                    "description": "A file the version's manifest lists, or manifest.json",
                },
                {
                    "name": "Range",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "example": "bytes=100-",
                    "description": "bytes=START- to resume a download",
                },
            ],
            "responses": {
                "200": {"description": "The whole file", "content": {"application/octet-stream":
                                                                     _BINARY}},
                "206": {
                    "description": "The requested range(s)",
                    "headers": {"Content-Range": {"$ref": "#/components/headers/ContentRange"}},
                    "content": {"application/octet-stream": _BINARY,
                                "multipart/byteranges": _BINARY},
                },
                "400": {"description": "A malformed Range header", "content": _TEXT},
                "401": _UNAUTHORIZED,
                "404": _error("No such version, or a name its manifest does not list"),
                "416": {"description": "The range starts past the end", "content": _TEXT},
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    },
}  # fmt: skip

_ADMIN_PARAMETERS = [
    {
        "name": "device_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "example": "phone-1",
    },
    {
        "name": "user_id",
        "in": "query",
        "required": False,
        "schema": _ID,
        "description": "Only this user of the device (a profile); all users without it",
    },
]
_ADMIN_UNAUTHORIZED = _error("Missing or wrong admin token (or no --admin-token-file)")
PATHS["/v1/admin/devices/{device_id}/events"] = {
    "get": {
        "operationId": "exportDeviceEvents",
        "summary": "Data request: every stored event of a device (or one of its users)",
        "tags": ["admin"],
        "security": [{"adminToken": []}],
        "parameters": _ADMIN_PARAMETERS,
        "responses": {
            "200": {
                "description": "One StoredEvent per line, in arrival order (streamed)",
                "content": {"application/x-ndjson": {"schema": _ref("StoredEvent")}},
            },
            "401": _ADMIN_UNAUTHORIZED,
            "422": _error("Not a device or user id (`field` says which)"),
            "503": _UNAVAILABLE,
        },
    },
    "delete": {
        "operationId": "eraseDeviceEvents",
        "summary": "Data request: erase the events of a device (or one of its users)",
        "tags": ["admin"],
        "security": [{"adminToken": []}],
        "parameters": _ADMIN_PARAMETERS,
        "responses": {
            "200": _json(_ref("Erased"), "Erased in one transaction"),
            "401": _ADMIN_UNAUTHORIZED,
            "422": _error("Not a device or user id (`field` says which)"),
            "503": _UNAVAILABLE,
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict)."""
    return json.loads(json.dumps(_DOCUMENT))  # type: ignore[no-any-return]


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "pocketrec sync server",
        "version": __version__,
        "description": (
            "Devices upload feedback events and download signed bundles. Every /v1 route but "
            "/v1/health and /v1/openapi.json needs `Authorization: Bearer <device token>`. "
            "Errors are JSON `{error, detail[, field]}`. Any route may answer 503 with "
            "`Retry-After` when the server is over its connection limit."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "headers": HEADERS,
        "securitySchemes": {
            "deviceToken": {"type": "http", "scheme": "bearer"},
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The operator's token (`pocketrec serve --admin-token-file`)",
            },
        },
    },
}


if __name__ == "__main__":
    print(json.dumps(document(), indent=2))
