"""The OpenAPI document of the sync API: it matches the application's routes, and schemathesis
(property-based testing from the document, positive and negative data) finds no 5xx and no
response that differs from the document on a real server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import SERVER_BACKENDS, PostgresSchemas, SyncHarness, postgres_base
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_process import get

from pocketrec.server.app import create_app
from pocketrec.server.bundles import BundleRepository
from pocketrec.server.openapi import OPENAPI_PATH, document
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage

EXAMPLES_PER_OPERATION = 100
"""Hypothesis examples per operation and generation mode (8 operations: a few hundred calls)."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_every_route_is_documented_and_every_documented_operation_exists(
    tmp_path: Path,
) -> None:
    storage = SqliteFeedbackStorage(tmp_path / "s.sqlite")
    try:
        app = create_app(storage, BundleRepository(tmp_path / "b", storage))
        served = {
            (route.path, method.lower())
            for route in app.routes
            for method in getattr(route, "methods", None) or ()
            if method != "HEAD"
        }
    finally:
        storage.close()
    documented = {
        (path, method) for path, operations in document()["paths"].items() for method in operations
    }
    assert served == documented
    assert len(served) == 10


def test_the_document_is_served_and_declares_the_wire_limits(sync_server: SyncHarness) -> None:
    status, body = get(sync_server.url, OPENAPI_PATH)
    assert status == 200
    served = json.loads(body)
    assert served == document()
    assert served["openapi"].startswith("3.")
    event = served["components"]["schemas"]["Event"]["properties"]
    assert event["user_id"]["maxLength"] == 512
    assert event["timestamp"]["maximum"] == 32_503_680_000.0


@pytest.fixture(scope="module", params=SERVER_BACKENDS)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SyncHarness, str]]:
    """A real server on each storage backend with a published bundle and a registered device
    (its token)."""
    schemas = PostgresSchemas(postgres_base()) if request.param == "postgres" else None
    root = tmp_path_factory.mktemp("api")
    harness = SyncHarness(root, None if schemas is None else schemas.new())
    harness.publish(1)
    token = harness.add_device("schemathesis")
    harness.server.start()
    try:
        yield harness, token
    finally:
        harness.server.stop()
        if schemas is not None:
            schemas.drop_all()


schema = schemathesis.openapi.from_dict(document())  # the served copy is checked above


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
def test_the_server_answers_as_documented(case: Any, api: tuple[SyncHarness, str]) -> None:
    harness, token = api
    headers = {"Authorization": f"Bearer {token}"}
    case.call_and_validate(base_url=harness.url, headers=headers, checks=CHECKS, timeout=30)
