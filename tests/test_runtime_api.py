"""The Recommender's batch, item-to-item and title API, and what ``reset`` keeps, on bundles
exported by the converter (float32 and int8 catalogs) and real SQLite stores."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pocketrec import Recommender
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import TitlesUnavailableError
from pocketrec.native import backends
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime import Recommendations, TitledRecommendations
from pocketrec.runtime import ranking as ranking_module
from pocketrec.runtime.similar import cosine_scores, inverse_embedding_norms
from pocketrec.storage import Store

NUM_ITEMS = 150  # the runtime test bundles' catalog (conftest.RuntimeBundles)
ITEMS = [f"i{i:05d}" for i in range(NUM_ITEMS)]
EVENTS = ["view", "click", "purchase", "like", "dislike", "dismiss"]


@pytest.fixture(params=["f32", "int8"])
def bundle_dir(request: pytest.FixtureRequest, runtime_bundles: Any) -> Path:
    path: Path = getattr(runtime_bundles, request.param)
    return path


def _catalog_ids(bundle_dir: Path) -> list[str]:
    """External ids in catalog index order (``items.json``)."""
    ids: list[str] = json.loads((bundle_dir / fmt.ITEMS).read_text("utf-8"))
    return ids


def _titles(bundle_dir: Path) -> list[str | None]:
    titles: list[str | None] = json.loads((bundle_dir / fmt.ITEM_TITLES).read_text("utf-8"))
    return titles


# --------------------------------------------------------------------------- recommend_batch


def batch_case(rng: random.Random) -> dict[str, Any]:
    """Random users with random histories (negative events and unknown items included), shared
    filters, k, and resets."""
    pool = [*ITEMS, "not-in-catalog"]

    def items(most: int) -> list[str]:
        return [rng.choice(pool) for _ in range(rng.randint(0, most))]

    users = [rng.choice("abcd") for _ in range(rng.randint(1, 6))]  # repeats allowed
    return {
        "histories": {
            u: [(rng.choice(pool), rng.choice(EVENTS)) for _ in range(rng.randint(0, 12))]
            for u in sorted(set(users))
        },
        "users": users,
        "unavailable": items(10),
        "exclude": items(10),
        "only": None if rng.random() < 0.5 else items(40),
        "exclude_seen": rng.random() < 0.5,
        "k": rng.choice([1, 2, 5, 10, rng.randint(1, NUM_ITEMS + 5)]),
        "resets": [rng.choice("ab") for _ in range(rng.randint(0, 2))],
    }


@pytest.fixture(scope="module")
def recommenders(runtime_bundles: Any) -> dict[tuple[str, str], Recommender]:
    """One recommender per backend and catalog dtype, with demotion on (the default is off),
    shared by the examples (each example uses users of its own)."""
    return {
        (backend, name): Recommender.open(
            getattr(runtime_bundles, name), backend=backend, demotion=1.0
        )
        for backend in backends()
        for name in ("f32", "int8")
    }


@pytest.mark.parametrize("catalog", ["f32", "int8"])
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("seed", range(30))
def test_recommend_batch_equals_recommend_per_user(
    recommenders: dict[tuple[str, str], Recommender], backend: str, catalog: str, seed: int
) -> None:
    """A property over random users, histories and filters (seeded: reproducible)."""
    case = batch_case(random.Random(seed))
    rec = recommenders[backend, catalog]
    rec.set_available(ITEMS, True)
    rec.set_available(case["unavailable"], False)
    prefix = f"case{seed}-"
    for user, history in case["histories"].items():
        for item_id, event in history:
            rec.observe(item_id, event, user=prefix + user)
    for user in case["resets"]:
        rec.reset(user=prefix + user)
    filters = {
        "exclude": case["exclude"],
        "only": case["only"],
        "exclude_seen": case["exclude_seen"],
    }
    users = [prefix + user for user in case["users"]]
    batch = rec.recommend_batch(users, case["k"], **filters)
    assert len(batch) == len(users)
    for user, got in zip(users, batch, strict=True):
        want = rec.recommend(case["k"], user=user, **filters)
        assert isinstance(got, Recommendations)
        assert got.scores.dtype == np.float32
        if catalog == "int8":  # exact integer dot products: identical on every backend
            assert got.ids == want.ids
            np.testing.assert_array_equal(got.scores, want.scores)
            continue
        # float32: a batch may sum in another order than one query (the numpy reference's BLAS
        # matrix product against its matrix-vector one): equal up to float32 rounding.
        ranking = rec.ranking(user=user, **filters)
        all_scores = ranking.scores()
        assert len(got.ids) == len(want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)
        for item_id, score in zip(got.ids, want.scores, strict=True):
            index = ranking.served.index(item_id)
            assert index is not None
            assert not ranking.exclude[index]
            assert all_scores[index] == pytest.approx(score, rel=1e-6, abs=1e-6)


def test_a_long_batch_is_ranked_in_several_kernel_calls_with_the_same_result(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recommender.open(bundle_dir)
    users = [f"u{n}" for n in range(9)]
    for n, user in enumerate(users):
        rec.observe(ITEMS[n], "click", user=user)
        rec.observe(ITEMS[n + 20], "dismiss", user=user)
    calls: list[int] = []
    real_topk = ranking_module.topk

    def counting_topk(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]))  # the queries [B, D]
        return real_topk(*args, **kwargs)

    monkeypatch.setattr(ranking_module, "topk", counting_topk)
    whole = rec.recommend_batch(users, 7)
    assert calls == [9]  # one pass over the catalog for the whole batch
    monkeypatch.setattr(ranking_module, "BATCH_MASK_BYTES", 4 * NUM_ITEMS)
    calls.clear()
    chunked = rec.recommend_batch(users, 7)
    assert calls == [4, 4, 1]
    for a, b, user in zip(whole, chunked, users, strict=True):
        assert a.ids == b.ids == rec.recommend(7, user=user).ids
        # a batch of one takes the single-query kernel, a larger one the batch kernel: the
        # float32 sums may differ in the last bit (int8 scores are exact)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_a_bundle_replaced_during_a_batch_ranks_each_user_on_their_own_bundle(
    runtime_bundles: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recommender.open(runtime_bundles.f32)
    before = Recommender.open(runtime_bundles.f32)
    users = ["a", "b", "c"]
    for r in (rec, before):
        for n, user in enumerate(users):
            r.observe(ITEMS[3 + n], "click", user=user)
    real = rec._ranking
    versions: list[int] = []

    def replace_after_the_first(user: str, *args: Any) -> Any:
        ranking = real(user, *args)
        versions.append(ranking.served.manifest.model_version)
        if user == "a":
            rec.replace_bundle(runtime_bundles.v2)
        return ranking

    monkeypatch.setattr(rec, "_ranking", replace_after_the_first)
    batch = rec.recommend_batch(users, 140)
    assert versions == [1, 2, 2]
    first = before.recommend(140, user="a")  # on the bundle the batch started with
    assert batch[0].ids == first.ids
    np.testing.assert_allclose(batch[0].scores, first.scores, rtol=1e-6, atol=1e-6)
    monkeypatch.undo()
    for user, got in zip(users[1:], batch[1:], strict=True):
        want = rec.recommend(140, user=user)  # version 2: no item i00120 and up
        assert got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)
    assert any(int(i[1:]) >= 120 for i in batch[0].ids)
    assert all(int(i[1:]) < 120 for b in batch[1:] for i in b.ids)


def test_recommend_batch_refuses_bad_input(bundle_dir: Path) -> None:
    rec = Recommender.open(bundle_dir)
    assert rec.recommend_batch([], 5) == []
    with pytest.raises(ValueError, match="users must be a collection of user ids"):
        rec.recommend_batch("alice", 5)
    with pytest.raises(ValueError, match="users must hold user ids"):
        rec.recommend_batch(["alice", 3], 5)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="user must be a non-empty str"):
        rec.recommend_batch(["alice", ""], 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rec.recommend_batch(["alice"], 0)
    with pytest.raises(ValueError, match="exclude must be a collection of item ids"):
        rec.recommend_batch(["alice"], 5, exclude="i00001")


# --------------------------------------------------------------------------- similar_items


def _numpy_cosines(bundle_dir: Path, index: int) -> npt.NDArray[np.float64]:
    """Cosine of every catalog embedding with item ``index``'s, in float64, from the files."""
    manifest = fmt.read_manifest(bundle_dir)
    if manifest.catalog_dtype == "int8":
        codes = np.load(bundle_dir / fmt.CATALOG_INT8_CODES).astype(np.float64)
        scales = np.load(bundle_dir / fmt.CATALOG_INT8_SCALES).astype(np.float64)
        rows = codes * scales[:, None]  # dequantized: the scales cancel in a cosine
    else:
        rows = np.load(bundle_dir / fmt.CATALOG).astype(np.float64)
    emb = rows[:, :-1]  # the bias column is no part of the similarity
    norms = np.linalg.norm(emb, axis=1)
    cosines: npt.NDArray[np.float64] = emb @ emb[index] / (norms * norms[index])
    return cosines


def _assert_matches_numpy(
    result: Recommendations,
    cosines: npt.NDArray[np.float64],
    eligible: set[int],
    k: int,
    ids: list[str],
) -> None:
    """``result`` is the top ``k`` of ``cosines`` (by catalog index; ``ids`` in that order)
    over ``eligible`` indices, up to float32 rounding."""
    order = sorted(eligible, key=lambda i: (-cosines[i], i))[:k]
    assert len(result.ids) == len(order)
    got = [ids.index(item_id) for item_id in result.ids]
    assert set(got) <= eligible
    np.testing.assert_allclose(result.scores, cosines[got], atol=2e-6)  # each score is its cosine
    np.testing.assert_allclose(result.scores, cosines[order], atol=2e-6)  # and the best k
    assert np.all(np.diff(result.scores) <= 0)  # best first


@pytest.mark.parametrize("item", [0, 3, 77, NUM_ITEMS - 1])
def test_similar_items_are_the_cosine_neighbours(bundle_dir: Path, item: int) -> None:
    rec = Recommender.open(bundle_dir)
    ids = _catalog_ids(bundle_dir)
    cosines = _numpy_cosines(bundle_dir, item)
    everything_else = set(range(NUM_ITEMS)) - {item}
    for k in (1, 10, NUM_ITEMS + 3):
        result = rec.similar_items(ids[item], k)
        assert ids[item] not in result.ids
        _assert_matches_numpy(result, cosines, everything_else, k, ids)
    assert np.all(np.abs(rec.similar_items(ids[item], NUM_ITEMS).scores) <= 1.0 + 1e-6)


def test_similar_items_apply_the_same_filters(bundle_dir: Path) -> None:
    rec = Recommender.open(bundle_dir)
    ids = _catalog_ids(bundle_dir)
    item = 5
    cosines = _numpy_cosines(bundle_dir, item)
    nearest = rec.similar_items(ids[item], 6).ids
    rec.set_available([nearest[0]], False)
    excluded = [nearest[1], "not-in-catalog"]
    only = [*nearest[1:5], ids[item], ids[100], ids[101], "not-in-catalog-either"]
    eligible = {ids.index(i) for i in only if i in ids} - {item, ids.index(nearest[1])}
    result = rec.similar_items(ids[item], 10, exclude=excluded, only=only)
    _assert_matches_numpy(result, cosines, eligible, 10, ids)

    # With a user: their rejected and (exclude_seen) consumed items as in recommend; no demotion.
    rec.observe(nearest[2], "purchase", user="alice")
    rec.observe(nearest[3], "dislike", user="alice")
    anyone = set(range(NUM_ITEMS)) - {item, ids.index(nearest[0])}
    seen, disliked = ids.index(nearest[2]), ids.index(nearest[3])
    for_alice = rec.similar_items(ids[item], 8, user="alice")
    _assert_matches_numpy(for_alice, cosines, anyone - {seen, disliked}, 8, ids)
    with_seen = rec.similar_items(ids[item], 8, user="alice", exclude_seen=False)
    _assert_matches_numpy(with_seen, cosines, anyone - {disliked}, 8, ids)
    for_nobody = rec.similar_items(ids[item], 8)
    _assert_matches_numpy(for_nobody, cosines, anyone, 8, ids)


def test_similar_items_refuse_bad_input(bundle_dir: Path) -> None:
    rec = Recommender.open(bundle_dir)
    with pytest.raises(ValueError, match="'nope' is not in the catalog of bundle version 1"):
        rec.similar_items("nope", 5)
    with pytest.raises(ValueError, match="item_id must be a str"):
        rec.similar_items(3, 5)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="k must be >= 1"):
        rec.similar_items("i00001", 0)


def test_cosine_scores_of_zero_embeddings_are_never_ranked() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 5)).astype(np.float32)
    rows[2, :-1] = 0.0  # no direction (a bias only)
    for catalog in (rows, _as_int8(rows)):
        norms = inverse_embedding_norms(catalog)
        assert np.isnan(norms[2])
        assert np.all(np.isfinite(np.delete(norms, 2)))
        scores = cosine_scores(catalog, 0, norms)
        assert np.isnan(scores[2])
        assert scores[0] == pytest.approx(1.0, abs=1e-6)
        assert np.all(np.isnan(cosine_scores(catalog, 2, norms)))  # nothing is like it


def _as_int8(rows: npt.NDArray[np.float32]) -> Int8Items:
    scales = (np.abs(rows).max(axis=1) / 127).astype(np.float32)
    codes = np.rint(rows / scales[:, None]).astype(np.int8)
    return Int8Items(codes=codes, scales=scales)


# --------------------------------------------------------------------------- titles


def test_titles_come_from_the_bundle(bundle_dir: Path) -> None:
    rec = Recommender.open(bundle_dir)
    titles, ids = _titles(bundle_dir), _catalog_ids(bundle_dir)
    assert rec.info()["titles"] is True
    assert rec.title(ids[3]) == titles[3]
    rec.observe("i00003", "click")
    titled = rec.recommend(5, titles=True)
    assert isinstance(titled, TitledRecommendations)
    plain = rec.recommend(5)
    assert titled.ids == plain.ids
    assert titled.titles == [titles[ids.index(i)] for i in titled.ids]
    plain_ids, plain_scores = plain  # still unpacks as (ids, scores)
    assert plain_ids == titled.ids
    np.testing.assert_array_equal(plain_scores, titled.scores)
    batch = rec.recommend_batch(["default", "other"], 4, titles=True)
    assert [b.titles for b in batch] == [[titles[ids.index(i)] for i in b.ids] for b in batch]
    similar = rec.similar_items("i00003", 3, titles=True)
    assert similar.titles == [titles[ids.index(i)] for i in similar.ids]
    with pytest.raises(ValueError, match="'nope' is not in the catalog"):
        rec.title("nope")


def test_a_bundle_without_titles_works_and_says_so(runtime_bundles: Any, tmp_path: Path) -> None:
    bundle = shutil.copytree(runtime_bundles.f32, tmp_path / "untitled")
    (bundle / fmt.ITEM_TITLES).unlink()
    manifest = fmt.read_manifest(bundle)
    del manifest.files[fmt.ITEM_TITLES]
    (bundle / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")

    rec = Recommender.open(bundle)
    assert rec.info()["titles"] is False
    rec.observe("i00003", "click")
    ids, _ = rec.recommend(5)
    assert len(ids) == 5
    assert len(rec.similar_items("i00003", 5).ids) == 5
    no_titles = r"has no item_titles\.json: its training data had no titles"
    with pytest.raises(TitlesUnavailableError, match=no_titles):
        rec.title("i00003")
    with pytest.raises(TitlesUnavailableError, match=no_titles):
        rec.recommend(5, titles=True)
    with pytest.raises(TitlesUnavailableError, match=no_titles):
        rec.recommend_batch(["default"], 5, titles=True)


# --------------------------------------------------------------------------- reset


def test_reset_keeps_dismissals_and_forgets_the_rest(bundle_dir: Path) -> None:
    rec = Recommender.open(bundle_dir)
    fresh = Recommender.open(bundle_dir)
    for item_id, event in [
        ("i00003", "click"),
        ("i00007", "dismiss"),
        ("i00008", "dislike"),
        ("i00009", "dismiss"),
        ("i00009", "dislike"),  # a dislike does not withdraw the dismissal
    ]:
        rec.observe(item_id, event)
    rec.reset()
    assert rec.recommend(NUM_ITEMS).ids == [
        i for i in fresh.recommend(NUM_ITEMS).ids if i not in ("i00007", "i00009")
    ]  # same vector, no demotion left, only the dismissed items still excluded
    np.testing.assert_array_equal(rec.user_vector(), fresh.user_vector())
    rec.observe("i00007", "like")  # engaging with a dismissed item withdraws the dismissal
    rec.reset()
    assert "i00007" in rec.recommend(NUM_ITEMS).ids
    assert "i00009" not in rec.recommend(NUM_ITEMS).ids


def test_dismissals_survive_a_reset_and_restarts(bundle_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "device.sqlite"
    fresh = Recommender.open(bundle_dir).recommend(NUM_ITEMS).ids
    with Recommender.open(bundle_dir, db=db) as rec:
        for item_id, event in [
            ("i00003", "click"),
            ("i00007", "dismiss"),
            ("i00008", "dislike"),
            ("i00011", "dismiss"),
            ("i00012", "dismiss"),
        ]:
            rec.observe(item_id, event, user="alice")
        rec.observe("i00011", "view", user="alice")  # withdrawn before the reset
        rec.reset(user="alice")
    dismissed = ["i00007", "i00012"]
    with Recommender.open(bundle_dir, db=db) as rec:  # a restart right after the reset
        ids = rec.recommend(NUM_ITEMS, user="alice").ids
        assert ids == [i for i in fresh if i not in dismissed]
        rec.observe("i00020", "dismiss", user="alice")
        rec.observe("i00012", "purchase", user="alice")  # withdrawn after the reset
    with Recommender.open(bundle_dir, db=db) as rec:  # a restart with events since the reset
        ids = rec.recommend(NUM_ITEMS, user="alice", exclude_seen=False).ids
        assert {"i00007", "i00020"}.isdisjoint(ids)
        assert {"i00003", "i00008", "i00011", "i00012"} <= set(ids)
        assert rec.recommend(NUM_ITEMS, user="bob").ids == fresh  # per user
    with Store.open(db) as store:
        assert store.dismissed_items("alice") == ["i00007", "i00020"]
        store.erase_user("alice")  # a data request forgets the dismissals too
        assert store.dismissed_items("alice") == []
    with Recommender.open(bundle_dir, db=db) as rec:
        assert rec.recommend(NUM_ITEMS, user="alice").ids == fresh
