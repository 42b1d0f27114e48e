"""Real-time negative feedback: a dislike/dismiss removes the item at once and demotes the items
close to it (``pocketrec.runtime.feedback``)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec import Recommender
from pocketrec.core import bundle as fmt
from pocketrec.runtime.feedback import (
    DEFAULT_DECAY,
    DEFAULT_DEMOTION,
    RejectedDirections,
    demote,
    rejection_direction,
)

HISTORY = [("i00003", "click"), ("i00010", "view"), ("i00004", "purchase"), ("i00021", "like")]

STRENGTH = 1.0
"""The demotion the mechanism is tested with (the default, 0, was measured: README)."""


def _pair(bundle_dir: Path) -> tuple[Recommender, Recommender]:
    """Two recommenders with the same events, with demotion ``STRENGTH`` and without."""
    pair = Recommender.open(bundle_dir, demotion=STRENGTH), Recommender.open(bundle_dir)
    for rec in pair:
        for item, event in HISTORY:
            rec.observe(item, event)
    return pair


def test_demote_removes_the_affinity_with_each_rejected_direction() -> None:
    rng = np.random.default_rng(0)
    query = rng.standard_normal(9).astype(np.float32)
    query[-1] = 1.0
    rows = rng.standard_normal((3, 9)).astype(np.float32)
    directions = np.stack([rejection_direction(r) for r in rows])
    assert np.all(directions[:, -1] == 0)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-6)
    demoted = demote(query, directions, 0.5)
    affinity = np.maximum(directions @ query, 0)
    np.testing.assert_allclose(demoted, query - 0.5 * affinity @ directions, rtol=1e-5)
    weights = np.array([1.0, 0.5, 0.0], np.float32)
    weighted = demote(query, directions, 0.5, weights)
    np.testing.assert_allclose(weighted, query - 0.5 * (weights * affinity) @ directions, rtol=1e-5)
    assert demoted[-1] == 1.0  # item biases keep their weight
    one = demote(query, directions[:1] * np.sign(directions[0] @ query), 1.0)
    assert abs(float(one @ directions[0])) < 1e-5  # λ = 1: nothing left along it
    away = -np.sign(directions[:1] @ query)[:, None] * directions[:1]  # no affinity: untouched
    np.testing.assert_array_equal(demote(query, away, 1.0), query)
    np.testing.assert_array_equal(demote(query, directions, 0.0), query)
    assert rejection_direction(np.zeros(9, np.float32)) is None


def test_demotion_is_off_by_default(runtime_bundles: Any) -> None:
    """The default λ was chosen on MovieLens 100K's validation users (README): every λ > 0 cost
    NDCG@10 there. A dismissed item is still removed at once."""
    assert DEFAULT_DEMOTION == 0.0
    rec = Recommender.open(runtime_bundles.f32)
    assert rec.info()["demotion"] == 0.0
    for item, event in HISTORY:
        rec.observe(item, event)
    top = rec.recommend(1).ids[0]
    rec.observe(top, "dismiss")
    np.testing.assert_array_equal(rec.ranking().query, rec.user_vector())
    assert top not in rec.recommend(150).ids


def test_rejected_directions_keep_the_most_recent_and_fade() -> None:
    rejected = RejectedDirections(capacity=2, decay=0.5)
    unit = np.eye(3, dtype=np.float32)
    for ordinal, (name, row) in enumerate(zip("abc", unit, strict=True)):
        rejected.add(name, row, ordinal)
    assert len(rejected) == 2  # "a" evicted
    query = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(rejected.apply(query, 1.0, 2), [1, 0.5, 0])
    np.testing.assert_array_equal(rejected.apply(query, 1.0, 4), [1, 0.875, 0.75])
    rejected.discard("b")
    np.testing.assert_array_equal(rejected.apply(query, 1.0, 2), [1, 1, 0])
    rejected.clear()
    np.testing.assert_array_equal(rejected.apply(query, 1.0, 2), query)


@pytest.mark.parametrize("event", ["dismiss", "dislike"])
def test_a_rejected_item_is_never_returned_again(runtime_bundles: Any, event: str) -> None:
    rec, _ = _pair(runtime_bundles.f32)
    top = rec.recommend(1)[0][0]
    rec.observe(top, event)
    for exclude_seen in (True, False):
        assert top not in rec.recommend(150, exclude_seen=exclude_seen)[0]
    rec.observe(top, "click")  # engaging with it later withdraws the rejection
    assert top in rec.recommend(150, exclude_seen=False)[0]
    assert top not in rec.recommend(150)[0]
    np.testing.assert_array_equal(rec.ranking().query, rec.user_vector())


@pytest.mark.parametrize("name", ["f32", "int8"])
def test_the_ranked_query_is_the_demoted_user_vector(runtime_bundles: Any, name: str) -> None:
    rec, plain = _pair(getattr(runtime_bundles, name))
    dismissed = plain.recommend(2)[0]
    for r in (rec, plain):
        for item in dismissed:
            r.observe(item, "dismiss")
    served = rec.ranking().served
    rows = [served.item_row(served.index(item)) for item in dismissed]
    directions = np.stack([rejection_direction(row) for row in rows])
    q = rec.user_vector()
    np.testing.assert_array_equal(q, plain.user_vector())
    assert np.all(directions @ q > 0)  # the user still leans towards what was dismissed
    weights = np.array([DEFAULT_DECAY, 1.0], np.float32)  # the first came one event earlier
    expected_query = demote(q, directions, STRENGTH, weights)
    np.testing.assert_allclose(rec.ranking().query, expected_query, rtol=1e-6)
    np.testing.assert_array_equal(plain.ranking().query, q)
    if name == "f32":  # every score drops by λ · w · affinity · (item · direction)
        delta = rec.ranking().scores() - plain.ranking().scores()
        catalog = np.load(getattr(runtime_bundles, name) / fmt.CATALOG)
        affinity = weights * np.maximum(directions @ q, 0)
        expected = -STRENGTH * (catalog @ directions.T) @ affinity
        np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-4)
    others = [i for i in ("i00050", "i00051", "i00052") if i not in dismissed]
    for n in range(30):  # later events on other items fade the demotion out
        rec.observe(others[n % 2], "view")
    assert np.linalg.norm(rec.ranking().query - rec.user_vector()) < 1e-3


def _with_catalog_row(src: Path, dst: Path, index: int, row: np.ndarray) -> Path:
    """A copy of the float32 bundle ``src`` whose catalog row ``index`` is ``row`` (manifest
    entry rehashed)."""
    shutil.copytree(src, dst)
    catalog = np.load(dst / fmt.CATALOG)
    catalog[index] = row
    np.save(dst / fmt.CATALOG, catalog)
    manifest = fmt.read_manifest(dst)
    files = {**manifest.files, fmt.CATALOG: fmt.file_entry(dst / fmt.CATALOG)}
    (dst / fmt.MANIFEST).write_text(dataclasses.replace(manifest, files=files).to_json())
    return dst


def test_a_dismissal_demotes_a_near_duplicate_at_once(runtime_bundles: Any, tmp_path: Path) -> None:
    rec, _ = _pair(runtime_bundles.f32)
    favourite = rec.recommend(1)[0][0]
    served = rec.ranking().served
    twin_index = served.index(rec.recommend(150)[0][-1])  # the user's least liked item ...
    assert twin_index is not None
    row = served.item_row(served.index(favourite))
    twin = served.item_ids[twin_index]
    bundle = _with_catalog_row(runtime_bundles.f32, tmp_path / "b", twin_index, row * 0.98)
    rec, plain = _pair(bundle)
    assert twin in rec.recommend(3)[0]  # ... made a near-copy of the favourite
    for r in (rec, plain):
        r.observe(favourite, "dismiss")
    without = plain.recommend(150)[0]
    with_demotion = rec.recommend(150)[0]
    assert without.index(twin) < 3
    assert with_demotion.index(twin) > without.index(twin) + 5
