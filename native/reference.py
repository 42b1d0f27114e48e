"""The numpy reference: it defines the right answer for every other backend.

All functions take validated inputs (see ``arguments.py``) and return ``(ids, scores, counts)``:
ids int64 ``[B, k]`` and scores float32 ``[B, k]``, best first with ties broken by lower index,
rows padded with ``-1`` / ``-inf`` after ``counts[b]`` results. Items whose score is NaN or that
are excluded are never returned.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pocketrec.core.ranking import select_topk
from pocketrec.native.result import Result
from pocketrec.native.screen import ScreenedItems, query_terms, slack

# Rows of the int8 catalog widened to int32 at a time (bounds the reference's scratch memory).
_I8_CHUNK = 65536


def _assemble(
    score_columns: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
    report_scale: npt.NDArray[np.float32] | None = None,
) -> Result:
    n, b = score_columns.shape
    ids = np.full((b, k), -1, dtype=np.int64)
    scores = np.full((b, k), -np.inf, dtype=np.float32)
    counts = np.zeros(b, dtype=np.int64)
    for i in range(b):
        if exclude is None:
            eligible = np.ones(n, dtype=np.bool_)
        else:
            eligible = (exclude if exclude.ndim == 1 else exclude[i]) == 0
        top_ids, top_scores = select_topk(score_columns[:, i], eligible, k)
        m = top_ids.size
        if report_scale is not None:
            top_scores = top_scores * report_scale[i]
        ids[i, :m], scores[i, :m], counts[i] = top_ids, top_scores, m
    return ids, scores, counts


def topk_f32(
    items: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """Reference float32 top-k: scores ``items @ queries.T`` (float32 BLAS)."""
    return _assemble(items @ queries.T, exclude, k)


def int8_ranks(
    codes: npt.NDArray[np.int8],
    scales: npt.NDArray[np.float32],
    qcodes: npt.NDArray[np.int8],
) -> npt.NDArray[np.float32]:
    """``float32(codes @ qcodes.T) * scales[:, None]`` ``[N, B]`` with exact int32 sums."""
    n = codes.shape[0]
    out = np.empty((n, qcodes.shape[0]), dtype=np.float32)
    q32 = qcodes.astype(np.int32).T
    for start in range(0, n, _I8_CHUNK):
        stop = min(start + _I8_CHUNK, n)
        acc = codes[start:stop].astype(np.int32) @ q32
        out[start:stop] = acc.astype(np.float32) * scales[start:stop, None]
    return out


def topk_i8(
    codes: npt.NDArray[np.int8],
    scales: npt.NDArray[np.float32],
    qcodes: npt.NDArray[np.int8],
    qscales: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """Reference int8 top-k (see ``int8.py`` for how ranks and scores are formed)."""
    return _assemble(int8_ranks(codes, scales, qcodes), exclude, k, report_scale=qscales)


def topk_screened(
    screened: ScreenedItems,
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """Reference screened top-k (see ``screen.py``): every bound at once in float64, the k-th
    largest lower bound per query, and float32 rescoring of the rows whose upper bound reaches
    it. Queries the bound cannot serve are rescored in full."""
    n, d = screened.shape
    b = queries.shape[0]
    terms = query_terms(queries, screened.max_norm)
    acc = screened.codes().astype(np.int32) @ terms.codes.astype(np.int32).T  # [N, B], exact
    errs = screened.errs[:n, None].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        approx = acc * (screened.scales[:n, None].astype(np.float64) * terms.scales)
        eps = errs * terms.norms + screened.norms[:n, None].astype(np.float64) * terms.errs
        lower = approx - eps - slack(d)
        upper = approx + eps + slack(d)
    ids = np.full((b, k), -1, dtype=np.int64)
    scores = np.full((b, k), -np.inf, dtype=np.float32)
    counts = np.zeros(b, dtype=np.int64)
    bounded = np.isfinite(errs[:, 0])
    for i in range(b):
        eligible = np.ones(n, dtype=np.bool_)
        if exclude is not None:
            eligible = (exclude if exclude.ndim == 1 else exclude[i]) == 0
        candidates = eligible
        lows = lower[eligible & bounded, i]
        if terms.usable[i] and lows.size >= k:
            candidates = eligible & (upper[:, i] >= np.partition(lows, lows.size - k)[-k])
        exact = np.full(n, np.nan, dtype=np.float32)
        exact[candidates] = screened.items[candidates] @ queries[i]
        top_ids, top_scores = select_topk(exact, eligible, k)
        m = top_ids.size
        ids[i, :m], scores[i, :m], counts[i] = top_ids, top_scores, m
    return ids, scores, counts
