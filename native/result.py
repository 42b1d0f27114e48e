"""The raw result every backend returns, and how it becomes the public ``(ids, scores)``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# ids int64 [B, k], scores float32 [B, k], counts int64 [B]: per query the first counts[b]
# entries are the results, best first; the rest of the row is padded with -1 / -inf.
Result = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]


def empty_result(b: int, k: int) -> Result:
    """Uninitialised output arrays for ``b`` queries and ``k`` results, for a kernel to fill."""
    return (
        np.empty((b, k), dtype=np.int64),
        np.empty((b, k), dtype=np.float32),
        np.empty(b, dtype=np.int64),
    )


def finalize(
    result: Result, *, single: bool, k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """One query's results trimmed to its count (1-D); a batch padded to ``k`` columns (2-D)."""
    ids, scores, counts = result
    if single:
        m = int(counts[0])
        return ids[0, :m].copy(), scores[0, :m].copy()
    width = ids.shape[1]
    if width < k:
        b = ids.shape[0]
        pad_ids = np.full((b, k - width), -1, dtype=np.int64)
        pad_scores = np.full((b, k - width), -np.inf, dtype=np.float32)
        return np.hstack([ids, pad_ids]), np.hstack([scores, pad_scores])
    return ids, scores
