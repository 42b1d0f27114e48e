"""Helpers for the kernel tests: every backend variant, and the comparison with the reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pocketrec.native import registry
from pocketrec.native.arguments import prepare
from pocketrec.native.int8 import Int8Items, quantize_rows
from pocketrec.native.result import Result, finalize
from pocketrec.native.screen import ScreenedItems


@dataclass(frozen=True)
class Problem:
    """One top-k case for the property tests: catalog ``[N, D]``, query ``[D]``, ``k`` and an
    optional exclusion mask ``[N]``."""

    items: npt.NDArray[np.float32]
    query: npt.NDArray[np.float32]
    k: int
    exclude: npt.NDArray[np.bool_] | None


@dataclass(frozen=True)
class Variant:
    """One implementation under test: a backend and, for C, a forced instruction-set path."""

    backend: str
    isa: str | None = None

    @property
    def name(self) -> str:
        return self.backend if self.isa is None else f"{self.backend}-{self.isa}"

    def topk(
        self,
        items: npt.NDArray[np.float32] | Int8Items | ScreenedItems,
        query: npt.NDArray[np.float32],
        k: int,
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``topk`` through this variant, with the public API's validation and output shaping."""
        call = prepare(items, query, k, exclude)
        impl = registry.load(self.backend)
        kwargs = {} if self.isa is None else {"isa": self.isa}
        result: Result
        if isinstance(call.items, ScreenedItems):
            result = impl.topk_screened(call.items, call.queries, call.exclude, call.k, **kwargs)
        elif isinstance(call.items, Int8Items):
            qcodes, qscales = quantize_rows(call.queries)
            result = impl.topk_i8(
                call.items.codes, call.items.scales, qcodes, qscales, call.exclude, call.k, **kwargs
            )
        else:
            result = impl.topk_f32(call.items, call.queries, call.exclude, call.k, **kwargs)
        return finalize(result, single=call.single, k=call.k_requested)


def all_variants() -> list[Variant]:
    """Every backend on this machine, and every C code path this CPU can run."""
    out = [Variant(name) for name in registry.backends() if name != "c"]
    if "c" in registry.backends():
        from pocketrec.native import c_backend

        out += [Variant("c", isa) for isa in c_backend.available_isas()]
    return out


REFERENCE = Variant("numpy")


def score_tolerance(
    items: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Per (query, item) bound on float32 rounding differences: 1e-5 of sum |x_t q_t|.

    Different backends add the D products in different orders; this bound (relative to the sum of
    magnitudes, the quantity rounding errors scale with) is what "1e-5 relative" means for a dot
    product. A tiny absolute term covers subnormal results.
    """
    mag = np.abs(queries.astype(np.float64)) @ np.abs(items.astype(np.float64)).T
    return 1e-5 * mag + 1e-40 * items.shape[1]


def assert_float_result_matches(
    items: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.bool_] | None,
    got: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
    want: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
) -> None:
    """``got`` agrees with the reference ``want`` up to rounding and the order of near-ties.

    Checked per query: same number of results; every returned id is eligible, unique, and its
    reported score is its own true score within the bound; scores are best first; and no item left
    out beats the worst returned one by more than both bounds (a row whose float32 sum cancels
    heavily may be ranked anywhere within its bound, which shifts every later rank, so ranks are
    not compared one by one). Infinite scores match the reference's exactly.
    """
    got_ids, got_scores = got
    want_ids, want_scores = want
    assert got_ids.shape == want_ids.shape
    assert got_ids.dtype == np.int64
    assert got_scores.dtype == np.float32
    queries = query.reshape(1, -1) if query.ndim == 1 else query
    gi = got_ids.reshape(queries.shape[0], -1)
    gs = got_scores.reshape(queries.shape[0], -1)
    wi = want_ids.reshape(queries.shape[0], -1)
    ws = want_scores.reshape(queries.shape[0], -1)
    tol = score_tolerance(items, queries)
    exact = queries.astype(np.float64) @ items.astype(np.float64).T
    for b in range(queries.shape[0]):
        valid = wi[b] >= 0
        np.testing.assert_array_equal(gi[b] >= 0, valid)
        ids = gi[b][valid]
        assert len(set(ids.tolist())) == ids.size, "duplicate ids"
        if exclude is not None:
            row = exclude if exclude.ndim == 1 else exclude[b]
            assert not row[ids].any(), "an excluded item was returned"
        scores = gs[b][valid]
        finite = np.isfinite(ws[b][valid])
        np.testing.assert_array_equal(scores[~finite], ws[b][valid][~finite])
        assert np.all(scores[:-1] >= scores[1:]), "not best first"
        # Each returned id carries its own score.
        own = np.abs(scores.astype(np.float64) - exact[b][ids])
        assert np.all(own[finite] <= tol[b][ids][finite])
        # Nothing left out beats the worst returned item beyond rounding.
        kept = np.isfinite(exact[b][ids])
        if kept.any():
            worst = np.min(exact[b][ids][kept] + tol[b][ids][kept])
            left = np.isfinite(exact[b])
            left[ids] = False
            if exclude is not None:
                left &= ~(exclude if exclude.ndim == 1 else exclude[b])
            beaten = exact[b][left] - tol[b][left] > worst
            assert not beaten.any(), "an item clearly better than a returned one was left out"
        assert np.all(np.isneginf(gs[b][~valid]))


def reference_topk(
    items: npt.NDArray[np.float32] | Int8Items | ScreenedItems,
    query: npt.NDArray[np.float32],
    k: int,
    exclude: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The numpy reference through the public code path."""
    return REFERENCE.topk(items, query, k, exclude)
