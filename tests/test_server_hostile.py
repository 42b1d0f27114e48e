"""Hostile requests against the real server on loopback: every one gets a 4xx, never a 500 and
never a crash, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SyncHarness
from hypothesis import given, settings
from hypothesis import strategies as st
from server_process import connect, get, metric_samples, read_reply, status_of
from test_sync_server import event

from pocketrec.core import wire
from pocketrec.runtime.sync.http import HttpClient
from pocketrec.server.running import ServerOptions
from pocketrec.server.transport import TransportLimits
from pocketrec.server.validation import MAX_BATCH_BYTES, value_depth
from pocketrec.storage import Store

EVENT = json.dumps(event())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SyncHarness]:
    """A started server with a 2 s body timeout (for bodies that never arrive) that closes idle
    connections after 1 s (raw requests here read until the server closes)."""
    limits = TransportLimits(body_timeout=2.0, keep_alive_timeout=1)
    harness = SyncHarness(tmp_path / "server", options=ServerOptions(limits=limits))
    harness.server.start()
    _5XX_BEFORE[harness.url] = _answered_5xx(harness.url)
    try:
        yield harness
    finally:
        harness.server.stop()


_5XX_BEFORE: dict[str, float] = {}
"""5xx answers counted before a test's server started: the metrics live as long as the test
process, and other modules' tests answer 503 on purpose."""


def server_errors(url: str) -> float:
    """How many 5xx answers the test's server has given."""
    return _answered_5xx(url) - _5XX_BEFORE.get(url, 0.0)


def _answered_5xx(url: str) -> float:
    samples = metric_samples(get(url, "/metrics")[1].decode())
    return sum(
        value for (name, labels), value in samples.items()
        if name == "pocketrec_http_requests_total" and dict(labels)["status"].startswith("5")
    )  # fmt: skip


def with_field(raw: str) -> bytes:
    """A batch of one valid event with one field's JSON text replaced: ``raw`` is
    ``'"name": <JSON text>'``."""
    name = raw.split(":", 1)[0].strip().strip('"')
    fields = [f'"{k}": {json.dumps(v)}' for k, v in event().items() if k != name]
    return ("{" + '"events": [{' + ", ".join([*fields, raw]) + "}]}").encode()


def nested_context(levels: int) -> dict[str, object]:
    """A context whose innermost object is ``levels`` levels below the context itself."""
    inner: dict[str, object] = {}
    for _ in range(levels):
        inner = {"a": inner}
    return inner


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_field('"seq": 18446744073709551616'), "events[0].seq"),  # 2^64
        (with_field('"seq": 9223372036854775808'), "events[0].seq"),  # 2^63
        (with_field('"seq": -340282366920938463463374607431768211456'), "events[0].seq"),
        (with_field('"seq": ' + "9" * 5000), "body"),  # too long for int(): refused at parse
        (with_field('"seq": 1e400'), "events[0].seq"),
        (with_field('"timestamp": 1e999'), "events[0].timestamp"),
        (with_field('"timestamp": -1e999'), "events[0].timestamp"),
        (with_field('"timestamp": NaN'), "body"),
        (with_field('"timestamp": Infinity'), "body"),
        (with_field('"timestamp": -Infinity'), "body"),
        (with_field('"timestamp": ' + "1" * 400), "events[0].timestamp"),
        (with_field('"timestamp": 253402300800'), "events[0].timestamp"),  # year 10000
        (with_field('"timestamp": -62135596800'), "events[0].timestamp"),  # year 1
        (with_field('"user_id": "\\ud800"'), "events[0].user_id"),  # a lone surrogate
        (with_field('"user_id": "a\\udfffb"'), "events[0].user_id"),
        (with_field('"item_id": "i\\u0000"'), "events[0].item_id"),  # NUL
        (with_field('"item_id": "i\\n"'), "events[0].item_id"),
        (with_field('"item_id": "i\\u0085"'), "events[0].item_id"),  # a C1 control
        (with_field('"item_id": "i\\u007f"'), "events[0].item_id"),
        (with_field('"event_id": "6f1c1a8e-1b7e-4c1e-9a53-8c1d2e3f4a5\\u0000"'),
         "events[0].event_id"),
        (with_field('"event_id": "' + "\u0661" * 32 + '"'), "events[0].event_id"),
        (with_field('"event_id": 12345'), "events[0].event_id"),
        (with_field('"event_type": "click\\u0000"'), "events[0].event_type"),
        (with_field('"context": {"k": "\\ud800"}'), "events[0].context"),
        (with_field('"context": {"\\udc00": 1}'), "events[0].context"),
        (with_field('"context": {"k": 1e999}'), "events[0].context"),
        (with_field('"context": "text"'), "events[0].context"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"events": [' + b"[" * 100_000, "body"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "body"),
        (b'"' + b'\\"' * 200_000, "body"),  # an unterminated string of escaped quotes
        (b'"[' * 200_000, "body"),
        (b"\xff\xfe{\x00}\x00", "body"),  # UTF-16
        ('{"events": []}'.encode("utf-16"), "body"),
        (b'\xef\xbb\xbf{"events": []}', "body"),  # a UTF-8 byte order mark
        (b'{"events": ["\xc3\x28"]}', "body"),  # invalid UTF-8
        (b'{"events": [], "x": "\xed\xa0\x80"}', "body"),  # an encoded surrogate
        (b"", "body"),
        (b"[]", "body"),
        (b'"events"', "body"),
        (b"null", "body"),
        (b"1" * 5000, "body"),
        (b'{"events": {}}', "events"),
        (b'{"events": [1]}', "events[0]"),
        (b'{"events": [null]}', "events[0]"),
    ],
)  # fmt: skip
def test_hostile_bodies_get_422_naming_the_field_and_store_nothing(
    server: SyncHarness, body: bytes, field: str
) -> None:
    client = HttpClient(server.url, server.add_device("phone"))
    reply = client.post_json("/v1/events", body)
    assert reply.status == 422, reply.error_text()
    assert json.loads(reply.body)["field"] == field
    assert server.event_ids() == []
    assert server_errors(server.url) == 0


def test_a_context_nested_as_deep_as_the_device_allows_is_accepted_and_deeper_refused(
    server: SyncHarness, tmp_path: Path
) -> None:
    client = HttpClient(server.url, server.add_device("phone"))
    deepest = event(context=nested_context(wire.MAX_JSON_DEPTH))
    body = json.dumps({"events": [deepest]}).encode()
    assert value_depth(json.loads(body)) == wire.MAX_BODY_DEPTH
    assert client.post_json("/v1/events", body).status == 200
    too_deep = event(context=nested_context(wire.MAX_JSON_DEPTH + 1))
    reply = client.post_json("/v1/events", json.dumps({"events": [too_deep]}).encode())
    assert reply.status == 422
    with Store.open(tmp_path / "device.sqlite") as store:  # the device refuses it first
        store.append("u", "i", "click", context=deepest["context"])
        with pytest.raises(ValueError, match="nested deeper"):
            store.append("u", "i", "click", context=too_deep["context"])


_TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\u00e9', max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=15,
)


def _text_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_JSON_VALUES, st.booleans())
@settings(max_examples=400, deadline=None)
def test_value_depth_is_the_bracket_depth_of_the_text(value: object, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only)  # strings full of [ ] " and \\
    assert value_depth(json.loads(body)) == _depth(value) == _text_depth(body)


def raw(server: SyncHarness, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server answers until it closes."""
    sock = connect(server.url)
    try:
        sock.sendall(request)
        return read_reply(sock)
    finally:
        sock.close()


def head(server: SyncHarness, token: str, extra: str = "", target: str = "/v1/events") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode()


def statuses(reply: bytes) -> list[int]:
    """Status codes of every response in a raw reply stream."""
    return [
        int(reply[i + 9 : i + 12]) for i in range(len(reply)) if reply.startswith(b"HTTP/1.1 ", i)
    ]


@pytest.mark.parametrize(
    "content_length",
    ["18446744073709551616", "9" * 40, "9" * 5000, "-1", "1e3", "0x10", "1, 2", "+5"],
)
def test_a_content_length_beyond_64_bits_or_malformed_is_a_4xx(
    server: SyncHarness, content_length: str
) -> None:
    token = server.add_device("phone")
    reply = raw(server, head(server, token, f"Content-Length: {content_length}\r\n") + b"{}")
    assert 400 <= status_of(reply) < 500, reply[:200]
    assert get(server.url, "/healthz")[0] == 200
    assert server_errors(server.url) == 0


def test_bodies_over_the_limit_are_413_however_framed(server: SyncHarness) -> None:
    token = server.add_device("phone")
    declared = raw(server, head(server, token, f"Content-Length: {MAX_BATCH_BYTES + 1}\r\n"))
    assert status_of(declared) == 413  # refused on the declared length, before any byte
    chunk = b"x" * 65536
    chunked = (
        head(server, token, "Transfer-Encoding: chunked\r\n")
        + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * (MAX_BATCH_BYTES // len(chunk) + 2)
        + b"0\r\n\r\n"
    )
    assert status_of(raw(server, chunked)) == 413  # no length: counted while reading
    assert server.event_ids() == []
    small = json.dumps({"events": [event()]}).encode()
    fine = head(server, token, "Transfer-Encoding: chunked\r\n") + (
        f"{len(small):x}\r\n".encode() + small + b"\r\n0\r\n\r\n"
    )
    assert status_of(raw(server, fine)) == 200  # chunked bodies within the limit are fine
    huge_chunk = head(server, token, "Transfer-Encoding: chunked\r\n") + b"f" * 5000 + b"\r\n"
    assert 400 <= status_of(raw(server, huge_chunk)) < 500
    assert server_errors(server.url) == 0


def test_content_length_lies_are_4xx(server: SyncHarness) -> None:
    token = server.add_device("phone")
    body = json.dumps({"events": [event()]}).encode()
    shorter = raw(server, head(server, token, "Content-Length: 10\r\n") + body)
    assert statuses(shorter)[0] == 422  # the first 10 bytes are not the JSON
    assert all(400 <= status < 500 for status in statuses(shorter))
    longer = raw(server, head(server, token, f"Content-Length: {len(body) + 100}\r\n") + body)
    assert status_of(longer) == 408  # the promised rest never comes: the body deadline
    assert server.event_ids() == []
    assert server_errors(server.url) == 0


@pytest.mark.parametrize(
    "version",
    ["99999999999999999999999999", "9" * 5000, "9223372036854775808", "-1", "%D9%A1",
     "1e3", "0x1", "%00"],
)  # fmt: skip
def test_bundle_versions_beyond_64_bits_or_not_decimal_are_404(
    server: SyncHarness, version: str
) -> None:
    server.publish(1)
    client = HttpClient(server.url, server.add_device("phone"))
    reply = client.request("GET", f"/v1/bundles/{version}/files/step.tflite")
    assert reply.status == 404
    assert json.loads(reply.body)["error"] == "not_found"
    assert client.request("GET", "/v1/bundles/1/files/step.tflite").status == 200
    assert server_errors(server.url) == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/bundles/1/files/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /v1/bundles/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        b"GET /v1/bundles/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x00b\r\n\r\n",
        b"GET /v1/bundles/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + b"t" * 10_000
        + b"\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS to a plain port
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(
    server: SyncHarness, request_bytes: bytes
) -> None:
    reply = raw(server, request_bytes)
    assert 400 <= status_of(reply) < 500, reply[:200]
    assert get(server.url, "/healthz")[0] == 200
    assert server_errors(server.url) == 0
