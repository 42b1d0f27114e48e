"""The ranking rule every part of pocketrec shares: higher score first, equal scores by lower
index, NaN scores never ranked. The kernels implement it in C and numba; this is the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def select_topk(
    scores: npt.NDArray[Any], eligible: npt.NDArray[np.bool_], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """The best ``k`` eligible entries of ``scores`` ``[N]`` (any real dtype): their indices
    (int64) and scores, highest score first, then lower index; NaN scores are skipped."""
    candidates = eligible
    if np.issubdtype(scores.dtype, np.floating):
        candidates = candidates & ~np.isnan(scores)
    idx = np.flatnonzero(candidates)
    s = scores[idx]
    if idx.size > k:
        kth = np.partition(s, idx.size - k)[idx.size - k]
        keep = s >= kth  # every item tied with the k-th best stays a candidate
        idx, s = idx[keep], s[keep]
    # Ascending by (score, -index), reversed: no negated scores, so no integer overflow.
    order = np.lexsort((-idx, s))[::-1][:k]
    return idx[order].astype(np.int64), s[order]
