"""Property tests: every backend and C code path against the numpy reference (hypothesis)."""

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

from pocketrec.native import quantize_int8

VARIANTS = all_variants()
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Value distributions for the catalog: magnitudes stay where float32 dot products neither
# overflow nor lose everything to subnormals (|x| <= 1e15 with D <= 300; >= 1e-15).
KINDS = ["normal", "integers", "constant", "zero_rows", "huge", "tiny", "mixed"]


@st.composite
def problems(draw: st.DrawFn, *, max_n: int = 5000, max_d: int = 300) -> Problem:
    """A random top-k problem: catalog, query (single or batch), k and exclusion mask."""
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(1, max_d))
    k = draw(st.integers(1, n + 5))
    batch = draw(st.sampled_from([None, 1, 2, 5, 33]))  # 33: past the C batch kernel's 32
    kind = draw(st.sampled_from(KINDS))
    mask_kind = draw(st.sampled_from(["none", "sparse", "half", "almost_all", "all", "per_query"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = 1 if batch is None else batch
    if kind == "integers":
        items = rng.integers(-8, 9, size=(n, d)).astype(np.float32)
        queries = rng.integers(-8, 9, size=(b, d)).astype(np.float32)
    elif kind == "constant":
        items = np.full((n, d), 0.5, dtype=np.float32)
        queries = np.ones((b, d), dtype=np.float32)
    else:
        scale = {"huge": 1e15, "tiny": 1e-15}.get(kind, 1.0)
        items = (rng.standard_normal((n, d)) * scale).astype(np.float32)
        queries = (rng.standard_normal((b, d)) * scale).astype(np.float32)
        if kind == "zero_rows" and n:
            items[rng.random(n) < 0.3] = 0.0
        if kind == "mixed" and n:
            items *= np.float32(10.0) ** rng.integers(-6, 7, size=(n, 1)).astype(np.float32)
    query = queries[0] if batch is None else queries
    density = {"none": 0.0, "sparse": 0.05, "half": 0.5, "almost_all": 0.995, "all": 1.0}
    exclude: npt.NDArray[np.bool_] | None
    if mask_kind == "none":
        exclude = None
    elif mask_kind == "per_query" and batch is not None:
        exclude = rng.random((b, n)) < 0.5
    else:
        exclude = rng.random(n) < density.get(mask_kind, 0.5)
    return Problem(items=items, query=query, k=k, exclude=exclude)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@PROPERTY_SETTINGS
@given(problem=problems())
def test_float32_matches_reference(variant: Variant, problem: Problem) -> None:
    items, query, k, exclude = problem.items, problem.query, problem.k, problem.exclude
    got = variant.topk(items, query, k, exclude)
    want = reference_topk(items, query, k, exclude)
    assert_float_result_matches(items, query, exclude, got, want)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@PROPERTY_SETTINGS
@given(problem=problems())
def test_exactly_representable_scores_give_identical_ids(
    variant: Variant, problem: Problem
) -> None:
    """With small integer values every summation order is exact: ids must match to the letter,
    which pins down the tie rule (equal scores by lower index)."""
    items, query, k, exclude = problem.items, problem.query, problem.k, problem.exclude
    items = np.rint(np.clip(items, -8, 8)).astype(np.float32)
    query = np.rint(np.clip(query, -8, 8)).astype(np.float32)
    got_ids, got_scores = variant.topk(items, query, k, exclude)
    want_ids, want_scores = reference_topk(items, query, k, exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@PROPERTY_SETTINGS
@given(problem=problems())
def test_int8_matches_int8_reference_exactly(variant: Variant, problem: Problem) -> None:
    items, query, k, exclude = problem.items, problem.query, problem.k, problem.exclude
    codes = quantize_int8(items)
    got_ids, got_scores = variant.topk(codes, query, k, exclude)
    want_ids, want_scores = reference_topk(codes, query, k, exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)
