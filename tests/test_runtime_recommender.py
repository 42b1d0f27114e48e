"""Recommender: opening, observe/recommend semantics, filters through the kernel's mask, unknown
items, bad input and several users, on bundles exported by the converter."""

from __future__ import annotations

import logging
import math
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec import Recommender
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import BundleError
from pocketrec.core.metrics import topk_items
from pocketrec.native import topk
from pocketrec.runtime import ranking as ranking_module
from pocketrec.runtime.bundle import open_bundle

HISTORY = [("i00003", "click"), ("i00010", "view"), ("i00004", "purchase"), ("i00021", "like")]


@pytest.fixture(params=["f32", "int8"])
def bundle_dir(request: pytest.FixtureRequest, runtime_bundles: Any) -> Path:
    path: Path = getattr(runtime_bundles, request.param)
    return path


@pytest.fixture
def rec(bundle_dir: Path) -> Recommender:
    return Recommender.open(bundle_dir)


def _observe_all(rec: Recommender, events: list[tuple[str, str]], user: str = "default") -> None:
    for item, event in events:
        assert rec.observe(item, event, user=user)


def test_open_reports_what_serves(rec: Recommender, bundle_dir: Path) -> None:
    info = rec.info()
    manifest = fmt.read_manifest(bundle_dir)
    assert info["interpreter"] in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    expected = os.environ.get("POCKETREC_EXPECT_INTERPRETER")  # set by .ci/runtime_leg
    if expected:
        assert info["interpreter"] == expected
    assert info["model_version"] == manifest.model_version == 1
    assert info["items"] == manifest.num_items == 150
    assert info["catalog_dtype"] == manifest.catalog_dtype
    assert info["backend"] in ("c", "numba", "numpy")
    if info["backend"] == "c":  # the C kernels' code path per kind, e.g. "avx2 (measured)"
        assert set(info["topk_isa"]) == {"f32", "f32_batch", "int8"}
    else:
        assert info["topk_isa"] is None
    assert (info["users"], info["unavailable"]) == (0, 0)


def test_a_bad_db_argument_is_refused(runtime_bundles: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"db must be a path, a pocketrec\.storage\.Store"):
        Recommender.open(runtime_bundles.f32, db=42)  # type: ignore[arg-type]


def test_a_corrupted_bundle_is_refused_naming_the_file(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(runtime_bundles.f32, copy)
    with (copy / fmt.STEP_MODEL).open("r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"step\.tflite: SHA-256 does not match"):
        Recommender.open(copy)


def test_a_user_without_events_gets_the_initial_user_vector(
    rec: Recommender, bundle_dir: Path
) -> None:
    initial = np.load(bundle_dir / fmt.INITIAL_USER)
    np.testing.assert_array_equal(rec.user_vector(user="new"), initial)
    ids, _ = rec.recommend(5, user="new")
    bundle = open_bundle(bundle_dir)
    expected, _ = topk(bundle.catalog, initial, 5)
    assert ids == [bundle.items.id(i) for i in expected.tolist()]


def test_each_event_is_one_step_of_the_model(
    rec: Recommender, bundle_dir: Path, replay_vector: Any
) -> None:
    for n in range(1, len(HISTORY) + 1):
        rec.observe(*HISTORY[n - 1])
        np.testing.assert_array_equal(rec.user_vector(), replay_vector(bundle_dir, HISTORY[:n]))


def test_recommend_orders_by_the_scores_the_kernel_ranks_with(
    rec: Recommender, bundle_dir: Path
) -> None:
    _observe_all(rec, HISTORY)
    ids, scores = rec.recommend(200)
    ranking = rec.ranking()
    assert scores.dtype == np.float32
    assert len(ids) == 150 - len(HISTORY)  # fewer than k are eligible: all of them, best first
    assert np.all(np.diff(scores) <= 0)
    expected = topk_items(ranking.scores(), 200, np.flatnonzero(ranking.exclude))
    assert ids == ranking.ids(expected)
    if fmt.read_manifest(bundle_dir).catalog_dtype == "float32":
        catalog = np.load(bundle_dir / fmt.CATALOG)
        index = {item: i for i, item in enumerate(ranking.served.item_ids)}
        rows = catalog[[index[i] for i in ids]]
        np.testing.assert_allclose(scores, rows @ rec.user_vector(), rtol=1e-5, atol=1e-6)


def test_consumed_items_are_excluded_unless_asked(rec: Recommender) -> None:
    _observe_all(rec, HISTORY)
    consumed = {item for item, _ in HISTORY}
    ids, _ = rec.recommend(150)
    assert consumed.isdisjoint(ids)
    everything, _ = rec.recommend(150, exclude_seen=False)
    assert consumed <= set(everything)
    assert len(everything) == 150


def test_exclude_and_only_are_per_call_filters(rec: Recommender) -> None:
    top, _ = rec.recommend(10)
    ids, _ = rec.recommend(10, exclude=top[:3])
    assert set(top[:3]).isdisjoint(ids)
    assert ids[:7] == top[3:10]
    assert rec.recommend(10)[0] == top  # nothing stays filtered after the call
    allowed = ["i00001", "i00002", "i00005", "not-in-catalog"]
    only_ids, _ = rec.recommend(10, only=allowed)
    assert sorted(only_ids) == ["i00001", "i00002", "i00005"]
    rec.observe("i00002")
    assert "i00002" not in rec.recommend(10, only=allowed)[0]
    none, scores = rec.recommend(10, only=[])
    assert (none, scores.shape) == ([], (0,))


def test_unavailable_items_are_never_returned(rec: Recommender) -> None:
    top, _ = rec.recommend(5)
    rec.set_available(top[:2], False)
    assert rec.info()["unavailable"] == 2
    for kwargs in ({}, {"exclude_seen": False}, {"only": top}):
        ids, _ = rec.recommend(150, **kwargs)
        assert set(top[:2]).isdisjoint(ids)
    rec.set_available(top[:1], True)
    assert rec.recommend(5)[0][0] == top[0]


def test_filters_reach_the_kernel_as_one_mask_without_over_fetching(
    rec: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, np.ndarray]] = []

    def spy(items: Any, query: Any, k: int, *, exclude: Any = None, backend: str = "auto") -> Any:
        calls.append((k, exclude.copy()))
        return topk(items, query, k, exclude=exclude, backend=backend)

    monkeypatch.setattr(ranking_module, "topk", spy)
    _observe_all(rec, HISTORY[:2])
    rec.observe("i00007", "dismiss")
    rec.set_available(["i00008"], False)
    ids, _ = rec.recommend(10, exclude=["i00009"])
    assert len(ids) == 10
    (k, mask), *_ = calls
    assert k == 10
    index = {item: i for i, item in enumerate(rec.ranking().served.item_ids)}
    masked = {"i00003", "i00010", "i00007", "i00008", "i00009"}
    np.testing.assert_array_equal(np.flatnonzero(mask), sorted(index[i] for i in masked))


def test_an_unknown_item_is_accepted_logged_and_changes_nothing(
    rec: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    _observe_all(rec, HISTORY[:2])
    before = rec.user_vector()
    ranked = rec.recommend(10)
    with caplog.at_level(logging.INFO, logger="pocketrec.runtime"):
        assert rec.observe("brand-new-item", "purchase") is False
    assert "'brand-new-item' is not in the catalog" in caplog.text
    np.testing.assert_array_equal(rec.user_vector(), before)
    ids, scores = rec.recommend(10)
    assert ids == ranked[0]
    np.testing.assert_array_equal(scores, ranked[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.observe("i00001", "buy"), "unknown event type 'buy'"),
        (lambda r: r.observe("i00001", 1), "event must be an event name or EventType"),
        (lambda r: r.observe("i00001", ts=-5), "non-negative Unix time"),
        (lambda r: r.observe("i00001", ts=math.nan), "finite"),
        (lambda r: r.observe("i00001", ts="yesterday"), "ts must be Unix seconds"),
        (lambda r: r.observe("i00001", ts=True), "ts must be Unix seconds"),
        (lambda r: r.observe("i00001", ts=datetime(2024, 1, 1)), "timezone-aware"),
        (lambda r: r.observe(17), "item_id must be a str"),
        (lambda r: r.observe("i00001", user=""), "user must be a non-empty str"),
        (lambda r: r.observe("i00001", context=[1]), "context must be a mapping"),
        (lambda r: r.recommend(0), "k must be >= 1"),
        (lambda r: r.recommend(True), "k must be a positive integer"),
        (lambda r: r.recommend(10, exclude="i00001"), "exclude must be a collection"),
        (lambda r: r.recommend(10, only=[1, 2]), "only must hold item ids"),
        (lambda r: r.set_available("i00001", False), "item_ids must be a collection"),
    ],
)
def test_bad_input_raises_value_error(rec: Recommender, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(rec)
    assert rec.user_vector().tolist() == rec.user_vector(user="untouched").tolist()


def test_timestamps_and_context_are_accepted(rec: Recommender) -> None:
    aware = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert rec.observe("i00003", "click", ts=aware, context={"screen": "home"})
    assert rec.observe("i00010", "view", ts=1_714_564_800)
    assert rec.observe("i00004", "purchase", ts=np.float64(1_714_564_900.5))


def test_several_users_are_independent(
    rec: Recommender, bundle_dir: Path, replay_vector: Any
) -> None:
    other = [("i00030", "click"), ("i00031", "dislike"), ("i00032", "view")]
    for (a_item, a_event), (b_item, b_event) in zip(HISTORY, other, strict=False):
        rec.observe(a_item, a_event, user="alice")
        rec.observe(b_item, b_event, user="bob")
    rec.observe(*HISTORY[-1], user="alice")
    np.testing.assert_array_equal(rec.user_vector(user="alice"), replay_vector(bundle_dir, HISTORY))
    np.testing.assert_array_equal(rec.user_vector(user="bob"), replay_vector(bundle_dir, other))
    assert "i00030" in rec.recommend(150, user="alice")[0]
    assert "i00030" not in rec.recommend(150, user="bob")[0]
    assert rec.users() == ["alice", "bob"]
    rec.reset(user="alice")
    np.testing.assert_array_equal(rec.user_vector(user="alice"), replay_vector(bundle_dir, []))
    assert "i00003" in rec.recommend(150, user="alice")[0]
    np.testing.assert_array_equal(rec.user_vector(user="bob"), replay_vector(bundle_dir, other))
