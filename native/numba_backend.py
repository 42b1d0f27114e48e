"""The numba top-k backend: the same fused scan as the C kernel, compiled with ``@njit``.

It is the fallback where the C extension cannot be built. Functions are compiled on first use
(``cache=True`` keeps the machine code between processes) and run without the GIL.
Thread safety: the kernels keep no state; concurrent calls are safe.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from pocketrec.native.result import Result, empty_result

# reassoc/contract let LLVM vectorize the dot-product reduction; NaN and infinity semantics
# stay IEEE so that NaN scores are detected like in the other backends.
_FASTMATH = {"reassoc", "contract", "nsz"}
_BLOCK = 256
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
_jit_exact = numba.njit(cache=True, nogil=True)


@_jit_exact
def _worse(sa: float, ia: int, sb: float, ib: int) -> bool:
    return sa < sb or (sa == sb and ia > ib)


@_jit_exact
def _sift_down(hs, hi, size, pos):  # type: ignore[no-untyped-def]
    s = hs[pos]
    idx = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child += 1
        if not _worse(hs[child], hi[child], s, idx):
            break
        hs[pos] = hs[child]
        hi[pos] = hi[child]
        pos = child
    hs[pos] = s
    hi[pos] = idx


@_jit_exact
def _push(hs, hi, size, s, idx):  # type: ignore[no-untyped-def]
    pos = size
    while pos > 0:
        parent = (pos - 1) // 2
        if not _worse(s, idx, hs[parent], hi[parent]):
            break
        hs[pos] = hs[parent]
        hi[pos] = hi[parent]
        pos = parent
    hs[pos] = s
    hi[pos] = idx


@_jit_exact
def _select_block(hs, hi, size, sc, base, cnt, ex, ex_row):  # type: ignore[no-untyped-def]
    """Offer scores ``sc[:cnt]`` of rows ``base..`` to one query's heap; returns the new size."""
    k = hs.shape[0]
    for j in range(cnt):
        s = sc[j]
        if s != s:
            continue
        if ex_row >= 0 and ex[ex_row + base + j] != 0:
            continue
        if size < k:
            _push(hs, hi, size, s, base + j)
            size += 1
        elif s > hs[0]:
            hs[0] = s
            hi[0] = base + j
            _sift_down(hs, hi, size, 0)
    return size


@_jit_exact
def _finish(hs, hi, size):  # type: ignore[no-untyped-def]
    """Sort a heap best-first in place and pad the rest with (-1, -inf)."""
    n = size
    while size > 1:
        last = size - 1
        s = hs[0]
        idx = hi[0]
        hs[0] = hs[last]
        hi[0] = hi[last]
        hs[last] = s
        hi[last] = idx
        size -= 1
        _sift_down(hs, hi, size, 0)
    for j in range(n, hs.shape[0]):
        hs[j] = -np.inf
        hi[j] = -1
    return n


@_jit
def _dots_f32(items, base, cnt, q, out):  # type: ignore[no-untyped-def]
    d = q.shape[0]
    for j in range(cnt):
        acc = np.float32(0.0)
        for t in range(d):
            acc += items[base + j, t] * q[t]
        out[j] = acc


@_jit
def _dots_i8(codes, scales, base, cnt, q, out):  # type: ignore[no-untyped-def]
    d = q.shape[0]
    for j in range(cnt):
        acc = np.int32(0)
        for t in range(d):
            acc += np.int32(codes[base + j, t]) * np.int32(q[t])
        out[j] = np.float32(acc) * scales[base + j]


def _exclude_args(
    exclude: npt.NDArray[np.uint8] | None, n: int
) -> tuple[npt.NDArray[np.uint8], int]:
    """Flattened mask and the per-query row stride (-1: no mask, 0: shared, n: one per query)."""
    if exclude is None:
        return np.zeros(1, dtype=np.uint8), -1
    return exclude.reshape(-1), (0 if exclude.ndim == 1 else n)


@numba.njit(cache=True, nogil=True)
def _scan_f32(items, queries, ex, stride, ids, scores, counts):  # type: ignore[no-untyped-def]
    n = items.shape[0]
    sc = np.empty(_BLOCK, dtype=np.float32)
    sizes = np.zeros(queries.shape[0], dtype=np.int64)
    for base in range(0, n, _BLOCK):
        cnt = min(_BLOCK, n - base)
        for i in range(queries.shape[0]):
            _dots_f32(items, base, cnt, queries[i], sc)
            ex_row = -1 if stride < 0 else i * stride
            sizes[i] = _select_block(scores[i], ids[i], sizes[i], sc, base, cnt, ex, ex_row)
    for i in range(queries.shape[0]):
        counts[i] = _finish(scores[i], ids[i], sizes[i])


@numba.njit(cache=True, nogil=True)
def _scan_i8(codes, scales, qcodes, qscales, ex, stride, ids, scores, counts):  # type: ignore[no-untyped-def]
    n = codes.shape[0]
    sc = np.empty(_BLOCK, dtype=np.float32)
    sizes = np.zeros(qcodes.shape[0], dtype=np.int64)
    for base in range(0, n, _BLOCK):
        cnt = min(_BLOCK, n - base)
        for i in range(qcodes.shape[0]):
            _dots_i8(codes, scales, base, cnt, qcodes[i], sc)
            ex_row = -1 if stride < 0 else i * stride
            sizes[i] = _select_block(scores[i], ids[i], sizes[i], sc, base, cnt, ex, ex_row)
    for i in range(qcodes.shape[0]):
        counts[i] = _finish(scores[i], ids[i], sizes[i])
        for j in range(counts[i]):
            scores[i, j] = scores[i, j] * qscales[i]


def topk_f32(
    items: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """float32 top-k (same contract as ``reference.topk_f32``)."""
    ids, scores, counts = empty_result(queries.shape[0], k)
    ex, stride = _exclude_args(exclude, items.shape[0])
    _scan_f32(items, queries, ex, stride, ids, scores, counts)
    return ids, scores, counts


def topk_i8(
    codes: npt.NDArray[np.int8],
    scales: npt.NDArray[np.float32],
    qcodes: npt.NDArray[np.int8],
    qscales: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """int8 top-k (same contract as ``reference.topk_i8``)."""
    ids, scores, counts = empty_result(qcodes.shape[0], k)
    ex, stride = _exclude_args(exclude, codes.shape[0])
    _scan_i8(codes, scales, qcodes, qscales, ex, stride, ids, scores, counts)
    return ids, scores, counts
