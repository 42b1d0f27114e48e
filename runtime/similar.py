"""Item-to-item similarity: the cosine of two catalog rows' embeddings.

A catalog row is ``v_j = [e_j, b_j]`` (embedding float32 ``[D]``, folded item bias ``b_j``), and
``Recommender.similar_items`` ranks items by

    cos(e_i, e_j) = e_i · e_j / (|e_i| |e_j|)      in [-1, 1], float32

the same notion of "similar" the negative-feedback demotion uses (``pocketrec.runtime.feedback``
demotes in proportion to this cosine). The bias is left out: it carries popularity, not
likeness, and a plain inner product would favour popular, long-norm items for every query. For
an int8 catalog it is the cosine of the code vectors, which equals the cosine of the dequantized
rows (each row's scale cancels out). An all-zero embedding has no direction: its score is NaN and
it is never returned (nor is anything similar to it).

Cost: one pass over the catalog (``O(N·D)``, numpy's matrix-vector product in chunks of
:data:`CHUNK_ROWS` rows); the inverse row norms ``[N]`` are computed once per bundle.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pocketrec.native.int8 import Int8Items

CHUNK_ROWS = 1 << 16
"""Catalog rows converted per step (bounded temporary memory for an int8 catalog)."""

Catalog = npt.NDArray[np.float32] | Int8Items


def _rows(catalog: Catalog, start: int, stop: int) -> npt.NDArray[np.float32]:
    """Rows ``start:stop`` as float32 ``[rows, D + 1]`` (int8: the codes, not dequantized)."""
    if isinstance(catalog, Int8Items):
        return catalog.codes[start:stop].astype(np.float32)
    return np.asarray(catalog[start:stop])


def inverse_embedding_norms(catalog: Catalog) -> npt.NDArray[np.float32]:
    """float32 ``[N]``: ``1 / |e_j|`` of each row's embedding part, NaN where it is all zero."""
    n = catalog.shape[0]
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        rows = _rows(catalog, start, start + CHUNK_ROWS)[:, :-1].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        with np.errstate(divide="ignore"):
            out[start : start + len(rows)] = np.where(norms > 0, 1.0 / norms, np.nan)
    return out


def cosine_scores(
    catalog: Catalog, index: int, inverse_norms: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """float32 ``[N]``: the cosine of every row's embedding with row ``index``'s (NaN for
    all-zero embeddings; all NaN when row ``index`` is one). ``inverse_norms`` from
    :func:`inverse_embedding_norms` of the same catalog."""
    query = _rows(catalog, index, index + 1)[0] * inverse_norms[index]
    query[-1] = 0.0  # the bias slot: embeddings only
    n = catalog.shape[0]
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        out[start:stop] = (_rows(catalog, start, stop) @ query) * inverse_norms[start:stop]
    return out
