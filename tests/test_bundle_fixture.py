"""A committed bundle locks format version 1: this build must read it and compute the same user
vector. Regenerate it (``tests/fixtures/make_bundle_v1.py``) only for a deliberate format change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pocketrec.core.bundle import FORMAT_VERSION, verify_bundle
from pocketrec.native import topk
from pocketrec.runtime.bundle import open_bundle

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_format_version_1_fixture_still_loads_and_replays() -> None:
    manifest = verify_bundle(FIXTURES / "bundle_v1")
    assert manifest.format_version == FORMAT_VERSION == 1
    bundle = open_bundle(FIXTURES / "bundle_v1")
    expected = json.loads((FIXTURES / "bundle_v1_expected.json").read_text())
    _state, user = bundle.step.replay(expected["items"], expected["events"])
    assert user is not None
    np.testing.assert_allclose(user, np.asarray(expected["user"], np.float32), atol=1e-5)
    assert user[-1] == 1.0  # the folded item-bias dimension
    assert isinstance(bundle.catalog, np.ndarray)
    ids, _ = topk(bundle.catalog, user, 5)
    assert len(ids) == 5
    assert bundle.titles is not None
    assert all(bundle.titles[i] for i in ids.tolist())
