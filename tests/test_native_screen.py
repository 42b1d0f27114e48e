"""The int8-screened float32 top-k: every backend and C path against the numpy float32 reference
(hypothesis, adversarial catalogs), the certified bound itself, and the shadow's layout."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from native_helpers import (
    Problem,
    Variant,
    all_variants,
    assert_float_result_matches,
    reference_topk,
)

from pocketrec.native import ScreenedItems, backends, screen_int8, topk
from pocketrec.native.screen import query_terms, slack

VARIANTS = all_variants()
by_name = pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# Catalog shapes that stress the bound: ties and near-ties, duplicates, magnitudes from
# subnormal products to 1e30, rows with NaN or infinity, a zero query. "overflow" (products
# near float32's limit, where the float32 result itself depends on the summation order) is only
# used where that does not matter: the bound test, and test_overflow_range_uses_the_plain_scan.
KINDS = [
    "normal", "integers", "constant", "near_ties", "duplicates", "huge", "tiny", "mixed",
    "nan_rows", "inf_rows", "zero_query", "subnormal",
]  # fmt: skip


def _catalog(
    kind: str, rng: np.random.Generator, n: int, d: int, b: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    if kind == "integers":
        return (
            rng.integers(-3, 4, size=(n, d)).astype(np.float32),
            rng.integers(-3, 4, size=(b, d)).astype(np.float32),
        )
    if kind == "constant":
        return np.full((n, d), 0.5, np.float32), np.ones((b, d), np.float32)
    scale = {"huge": 1e15, "tiny": 1e-15, "overflow": 1e19, "subnormal": 1e-25}.get(kind, 1.0)
    items = (rng.standard_normal((n, d)) * scale).astype(np.float32)
    queries = (rng.standard_normal((b, d)) * scale).astype(np.float32)
    if n and kind == "near_ties":  # every row a hair away from row 0
        items = items[:1] * (1 + rng.integers(-3, 4, size=(n, 1)) * 2.0**-22).astype(np.float32)
    if n and kind == "duplicates":
        items = items[rng.integers(0, max(1, n // 4), size=n)]
    if n and kind == "mixed":
        items *= np.float32(10.0) ** rng.integers(-6, 7, size=(n, 1)).astype(np.float32)
    if n and kind in ("nan_rows", "inf_rows"):
        rows = rng.random(n) < 0.2
        cols = rng.integers(0, d, size=n)
        items[rows, cols[rows]] = np.nan if kind == "nan_rows" else np.inf
    if kind == "zero_query":
        queries[0] = 0.0
    return np.ascontiguousarray(items), np.ascontiguousarray(queries)


@st.composite
def problems(
    draw: st.DrawFn, *, max_n: int = 3000, max_d: int = 130, kinds: tuple[str, ...] = ()
) -> Problem:
    """A top-k problem over an adversarial catalog (of ``KINDS`` and ``kinds``); B is 1 (a
    [D] query) or 1..70."""
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(1, max_d))
    k = draw(st.one_of(st.integers(1, 12), st.integers(1, n + 5)))
    batch = draw(st.one_of(st.none(), st.integers(1, 70)))
    kind = draw(st.sampled_from(KINDS + list(kinds)))
    mask_kind = draw(st.sampled_from(["none", "sparse", "half", "almost_all", "all", "per_query"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = 1 if batch is None else batch
    items, queries = _catalog(kind, rng, n, d, b)
    query = queries[0] if batch is None else queries
    density = {"none": 0.0, "sparse": 0.05, "half": 0.5, "almost_all": 0.995, "all": 1.0}
    exclude: npt.NDArray[np.bool_] | None = None
    if mask_kind == "per_query" and batch is not None:
        exclude = rng.random((b, n)) < 0.5
    elif mask_kind != "none":
        exclude = rng.random(n) < density.get(mask_kind, 0.5)
    return Problem(items=items, query=query, k=k, exclude=exclude)


@by_name
@PROPERTY_SETTINGS
@given(problem=problems())
def test_screened_matches_float32_reference(variant: Variant, problem: Problem) -> None:
    items, query, k, exclude = problem.items, problem.query, problem.k, problem.exclude
    with np.errstate(all="ignore"):
        got = variant.topk(screen_int8(items), query, k, exclude)
        want = reference_topk(items, query, k, exclude)
        assert_float_result_matches(items, query, exclude, got, want)


@by_name
@PROPERTY_SETTINGS
@given(problem=problems())
def test_screened_exactly_representable_scores_give_identical_ids(
    variant: Variant, problem: Problem
) -> None:
    """Small integers: every summation order is exact, so ids and scores match to the letter
    (ties by lower index, through the screen's candidates)."""
    items = np.rint(np.clip(np.nan_to_num(problem.items), -8, 8)).astype(np.float32)
    query = np.rint(np.clip(problem.query, -8, 8)).astype(np.float32)
    got_ids, got_scores = variant.topk(screen_int8(items), query, problem.k, problem.exclude)
    want_ids, want_scores = reference_topk(items, query, problem.k, problem.exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


@PROPERTY_SETTINGS
@given(problem=problems(max_n=400, kinds=("overflow",)), qmax=st.sampled_from([127, 64]))
def test_every_float32_score_lies_within_the_bound(problem: Problem, qmax: int) -> None:
    """The certified bound: each row's float32 score (numpy) and exact score (float64) lie in
    [s~ - eps - c, s~ + eps + c] for every usable query, with both query code ranges."""
    items = problem.items
    queries = problem.query.reshape(-1, items.shape[1])
    screened = screen_int8(items)
    n, d = items.shape
    terms = query_terms(queries, screened.max_norm, qmax)
    acc = screened.codes().astype(np.int64) @ terms.codes.astype(np.int64).T
    with np.errstate(all="ignore"):
        approx = acc * (screened.scales[:n, None].astype(np.float64) * terms.scales)
        eps = screened.errs[:n, None] * terms.norms.astype(np.float64)
        eps = eps + screened.norms[:n, None] * terms.errs.astype(np.float64) + slack(d)
        f32 = items @ queries.T
        exact = items.astype(np.float64) @ queries.astype(np.float64).T
    bounded = np.isfinite(screened.errs[:n])[:, None] & terms.usable[None, :]
    for score in (f32.astype(np.float64), exact):
        assert np.all(np.abs(score - approx)[bounded] <= eps[bounded])


def test_screen_layout_and_memory() -> None:
    items = np.random.default_rng(1).standard_normal((37, 10)).astype(np.float32)
    items[5, 3] = np.nan
    screened = screen_int8(items)
    assert screened.shape == (37, 10)
    assert screened.items is items
    assert screened.packed.shape == (3, 3, 16, 4)
    assert screened.nbytes == 48 * (12 + 12)  # 3 groups of 16 rows: 12 code bytes + 12 a row
    codes = screened.codes()
    dequantized = codes * screened.scales[:37, None]
    finite = np.isfinite(items).all(axis=1)
    assert np.all(np.abs(dequantized - items)[finite] <= screened.scales[:37, None][finite])
    assert np.isinf(screened.errs[5])
    assert np.all(np.isfinite(screened.errs[:37][finite]))
    assert np.all(screened.errs[37:] == 0)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 4)), np.zeros((3, 4), np.float32)[:, ::2], np.zeros(4, np.float32), [[1.0]]],
)
def test_screen_rejects_what_it_cannot_shadow(bad: object) -> None:
    with pytest.raises(ValueError, match="screen_int8"):
        screen_int8(bad)  # type: ignore[arg-type]


@pytest.mark.skipif("c" not in backends(), reason="the C extension is not built")
def test_c_screen_rescores_few_rows_and_falls_back_when_it_must() -> None:
    """On a random catalog each query rescores a few dozen of 20,000 rows; a zero query and a
    catalog of ties are answered by the plain scan (-1), with the same result."""
    from pocketrec.native import c_backend

    rng = np.random.default_rng(3)
    items = rng.standard_normal((20_000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    queries[7] = 0.0
    for isa in c_backend.available_isas():
        result, candidates = c_backend.topk_screened_counted(
            screen_int8(items), queries, None, 10, isa=isa
        )
        assert candidates[7] == -1
        assert np.all(candidates[np.arange(40) != 7] < 400), candidates
        want = reference_topk(items, queries, 10)
        assert_float_result_matches(items, queries, None, (result[0], result[1]), want)
        ties = np.ones((20_000, 32), np.float32)
        _, tie_candidates = c_backend.topk_screened_counted(
            screen_int8(ties), queries[:3], None, 10, isa=isa
        )
        assert np.all(tie_candidates == -1)


@pytest.mark.skipif("c" not in backends(), reason="the C extension is not built")
def test_overflow_range_uses_the_plain_scan() -> None:
    """Where a float32 sum could overflow, the result depends on the summation order, so no bound
    holds: every query is answered by the plain single-query scan of the same path."""
    from pocketrec.native import c_backend

    rng = np.random.default_rng(5)
    items = (rng.standard_normal((700, 40)) * 1e19).astype(np.float32)
    queries = (rng.standard_normal((5, 40)) * 1e19).astype(np.float32)
    for isa in c_backend.available_isas():
        (ids, scores, _), candidates = c_backend.topk_screened_counted(
            screen_int8(items), queries, None, 6, isa=isa
        )
        assert np.all(candidates == -1)
        for i in range(5):
            plain_ids, plain_scores, _ = c_backend.topk_f32(
                items, queries[i : i + 1], None, 6, isa=isa
            )
            np.testing.assert_array_equal(ids[i], plain_ids[0])
            np.testing.assert_array_equal(scores[i], plain_scores[0])


def test_public_topk_takes_a_screened_catalog() -> None:
    items = np.random.default_rng(4).standard_normal((500, 8)).astype(np.float32)
    screened = screen_int8(items)
    assert isinstance(screened, ScreenedItems)
    ids, scores = topk(screened, items[3], 4)
    want_ids, want_scores = topk(items, items[3], 4, backend="numpy")
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
