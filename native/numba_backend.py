"""The numba top-k backend: the same fused scan as the C kernel, compiled with ``@njit``.

It is the fallback where the C extension cannot be built. Functions are compiled on first use
(``cache=True`` keeps the machine code between processes) and run without the GIL.
Thread safety: the kernels keep no state; concurrent calls are safe.

The scan visits the catalog in blocks of ``_BLOCK`` rows; per query, a dot kernel fills a buffer
with the block's scores and ``_select_block`` offers them to that query's bounded heap, skipping
the whole block when the heap is full and no score in it beats the heap's worst entry.

The dot products are built from two small intrinsics (``_row_dot_f32``, ``_row_dot_i8``) that
emit portable LLVM vector code, because LLVM's own vectorization of the equivalent numba loops
is slow here (measured with ``bench/bench_topk.py``):

- float32: on AVX-512 CPUs LLVM vectorizes the loop with 512-bit loads, and numpy's large arrays
  start 16 bytes past a 64-byte cache line, so every such load straddles two lines (about 30%
  slower than the C kernel once the catalog streams from L3 or memory). ``_row_dot_f32`` uses
  256-bit vectors, which split only every other load, like the C kernel's AVX2 path.
- int8: as a loop, LLVM widens the codes to 32 bits (16 products per instruction at best).
  ``reduce.add(mul(zext(u8 x 64), sext(s8 x 64)))`` is the pattern the x86 backend turns into one
  ``vpdpbusd`` (AVX-512 VNNI / AVX-VNNI; ``vpmaddwd`` without VNNI). The codes become unsigned as
  ``c ^ 0x80 = c + 128``, so each product carries an extra ``128 * q[t]`` and ``128 * sum(q)`` is
  subtracted per row. int32 sums wrap like numpy's: ranks are bit-identical to the reference.
  Like the C kernels, the int8 scan prefetches (``_prefetch``, ``llvm.prefetch``) each row's
  line ``_PREFETCH_AHEAD`` bytes ahead (always: the hints cost little at N = 10k here): from DRAM
  (N = 1M) that kept it at ~1.2x the C kernel once the C kernel's own prefetch and in-register
  candidate test had made that ~1.5x faster (``bench/bench_topk.py``, two runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from pocketrec.native.result import Result, empty_result
from pocketrec.native.screen import ScreenedItems, query_terms, slack

# float32 dot products may be summed in any order and fused (reassoc, contract, nsz); NaN and
# infinity semantics stay IEEE so that NaN scores are detected like in the other backends.
_FASTMATH = {"reassoc", "contract", "nsz"}
_BLOCK = 256
_F32_LANES = 8  # float32 per vector: 256 bits (see the module docstring)
_I8_LANES = 64  # int8 per vector: one 512-bit vpdpbusd ...
_I8_TAIL_LANES = 16  # ... then 128-bit steps for the rest of the dimension
_I8_BIAS = 128
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
_jit_exact = numba.njit(cache=True, nogil=True)


def _intrinsic(typing: Callable[..., Any]) -> Any:
    """``numba.extending.intrinsic``, seen by mypy as a plain callable (numba's stub would want
    the typing context as the first argument of every call from jitted code)."""
    return intrinsic(typing)


def _row_dot_signature(name: str, dtype: Any, rows: Any, q: Any, lanes: Any, result: Any) -> Any:
    """Typing of a row-dot intrinsic ``(rows, row, q, start, stop, lanes)``."""
    contiguous = (
        isinstance(rows, types.Array)
        and rows.ndim == 2
        and rows.layout == "C"
        and isinstance(q, types.Array)
        and q.ndim == 1
        and q.layout == "C"
    )
    if not contiguous or rows.dtype != dtype or q.dtype != dtype:
        raise TypingError(f"{name} needs a C-contiguous {dtype} [N, D] array and a [D] query")
    if not isinstance(lanes, types.IntegerLiteral):
        raise TypingError(f"{name}: lanes must be a compile-time constant")
    return result(rows, types.intp, q, types.intp, types.intp, lanes)


def _local(builder: Any, value: Any) -> Any:
    """A stack slot (in the entry block, so that LLVM keeps it in a register) set to ``value``."""
    with builder.goto_entry_block():
        slot = builder.alloca(value.type)
    builder.store(value, slot)
    return slot


@contextmanager
def _vector_loop(context: Any, builder: Any, sig: Any, args: Any, elem: Any) -> Iterator[Any]:
    """Emit ``for t in range(start, stop, lanes)`` for a row-dot intrinsic; the body (the
    ``with`` block) gets the vectors ``rows[row, t:t+lanes]`` and ``q[t:t+lanes]``."""
    rows = context.make_array(sig.args[0])(context, builder, args[0])
    query = context.make_array(sig.args[2])(context, builder, args[2])
    row, start, stop = args[1], args[3], args[4]
    lanes = sig.args[5].literal_value
    intp = start.type
    size = context.get_abi_sizeof(context.get_data_type(sig.args[2].dtype))
    byte_ptr = ir.IntType(8).as_pointer()
    row_offset = builder.mul(row, builder.extract_value(rows.strides, 0))
    row_ptr = builder.gep(builder.bitcast(rows.data, byte_ptr), [row_offset])
    q_ptr = builder.bitcast(query.data, byte_ptr)
    vec_ptr = ir.VectorType(elem, lanes).as_pointer()
    with cgutils.for_range_slice(builder, start, stop, ir.Constant(intp, lanes), intp) as (t, _):
        offset = builder.mul(t, ir.Constant(intp, size))
        x = builder.load(builder.bitcast(builder.gep(row_ptr, [offset]), vec_ptr), align=size)
        y = builder.load(builder.bitcast(builder.gep(q_ptr, [offset]), vec_ptr), align=size)
        yield x, y


def _reduce(builder: Any, op: str, vec: Any, *start: Any, fastmath: tuple[str, ...] = ()) -> Any:
    """``llvm.vector.reduce.<op>(*start, vec)``: the lanes of ``vec`` combined (after ``start``)."""
    elem = vec.type.element
    suffix = f"v{vec.type.count}" + ("f32" if isinstance(elem, ir.FloatType) else f"i{elem.width}")
    name = f"llvm.vector.reduce.{op}.{suffix}"
    fnty = ir.FunctionType(elem, [s.type for s in start] + [vec.type])
    fn = builder.module.globals.get(name) or ir.Function(builder.module, fnty, name)
    return builder.call(fn, [*start, vec], fastmath=fastmath)


@_intrinsic
def _row_dot_f32(
    typingctx: Any, rows: Any, row: Any, q: Any, start: Any, stop: Any, lanes: Any
) -> Any:
    """float32 ``sum(rows[row, t] * q[t] for start <= t < stop)``, ``stop - start`` a multiple of
    ``lanes``: products are added lane-wise into one vector that is summed once at the end, in
    any order (reassoc, contract, nsz; NaN and infinity stay IEEE)."""
    sig = _row_dot_signature("_row_dot_f32", types.float32, rows, q, lanes, types.float32)
    fast = tuple(sorted(_FASTMATH))

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vec = ir.VectorType(ir.FloatType(), sig.args[5].literal_value)
        acc = _local(builder, ir.Constant(vec, None))
        with _vector_loop(context, builder, sig, args, ir.FloatType()) as (x, y):
            product = builder.fmul(x, y, flags=fast)
            builder.store(builder.fadd(builder.load(acc), product, flags=fast), acc)
        zero = ir.Constant(ir.FloatType(), -0.0)
        return _reduce(builder, "fadd", builder.load(acc), zero, fastmath=fast)

    return sig, codegen


@_intrinsic
def _row_dot_i8(
    typingctx: Any, rows: Any, row: Any, q: Any, start: Any, stop: Any, lanes: Any
) -> Any:
    """int32 ``sum((rows[row, t] + 128) * q[t] for start <= t < stop)`` (wrapping), ``stop -
    start`` a multiple of ``lanes``; each step is ``reduce.add(mul(zext(c ^ 0x80), sext(q)))``,
    which is one ``vpdpbusd`` with VNNI (see the module docstring)."""
    sig = _row_dot_signature("_row_dot_i8", types.int8, rows, q, lanes, types.int32)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        lanes = sig.args[5].literal_value
        i32 = ir.IntType(32)
        wide = ir.VectorType(i32, lanes)
        bias = ir.Constant(ir.VectorType(ir.IntType(8), lanes), [0x80] * lanes)
        acc = _local(builder, ir.Constant(i32, 0))
        with _vector_loop(context, builder, sig, args, ir.IntType(8)) as (x, y):
            product = builder.mul(builder.zext(builder.xor(x, bias), wide), builder.sext(y, wide))
            builder.store(builder.add(builder.load(acc), _reduce(builder, "add", product)), acc)
        return builder.load(acc)

    return sig, codegen


_PREFETCH_AHEAD = 4096  # bytes: the C kernels' PR_PREFETCH_AHEAD (see native/csrc/topk.c)
# The intrinsic's name carries the pointer type: opaque ``ptr`` from LLVM 15 on, ``i8*`` before.
_PREFETCH_INTRINSIC = (
    "llvm.prefetch.p0" if llvm_binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"
)


@_intrinsic
def _prefetch(typingctx: Any, rows: Any, row: Any, offset: Any) -> Any:
    """Hint (``llvm.prefetch``, read, into L1) the line ``_PREFETCH_AHEAD + offset`` bytes past
    the start of ``rows[row]``. A hint, not a load: an address past the array's end is harmless
    (the ``getelementptr`` is not ``inbounds``)."""
    if not (isinstance(rows, types.Array) and rows.ndim == 2 and rows.layout == "C"):
        raise TypingError("_prefetch needs a C-contiguous [N, D] array")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        array = context.make_array(sig.args[0])(context, builder, args[0])
        byte_ptr = ir.IntType(8).as_pointer()
        start = builder.mul(args[1], builder.extract_value(array.strides, 0))
        ahead = builder.add(start, ir.Constant(start.type, _PREFETCH_AHEAD))
        address = builder.gep(builder.bitcast(array.data, byte_ptr), [builder.add(ahead, args[2])])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = builder.module.globals.get(_PREFETCH_INTRINSIC) or ir.Function(
            builder.module, fnty, _PREFETCH_INTRINSIC
        )
        # read (0), highest locality (3: keep in every cache level), data cache (1)
        builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(rows, types.intp, types.intp), codegen


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
def _beats(sc, cnt, worst):  # type: ignore[no-untyped-def]
    """Whether some ``sc[:cnt]`` is > ``worst``, i.e. the block's max beats it (NaN never does)."""
    hit = False
    for j in range(cnt):
        hit |= sc[j] > worst
    return hit


@_jit_exact
def _select_block(hs, hi, size, sc, base, cnt, ex, ex_row):  # type: ignore[no-untyped-def]
    """Offer scores ``sc[:cnt]`` of rows ``base..`` to one query's heap; returns the new size.

    Pre-check: once the heap is full, a row enters only with a score > the root (its worst
    score; rows come in increasing index order, so an equal score loses the tie). A block whose
    max is <= the root is skipped without looking at NaN or exclusions: it cannot change the heap.
    """
    k = hs.shape[0]
    if size == k and not _beats(sc, cnt, hs[0]):
        return size
    for j in range(cnt):
        s = sc[j]
        full = size == k
        if (full and not s > hs[0]) or s != s:  # the cheap test first; NaN is never kept
            continue
        if ex_row >= 0 and ex[ex_row + base + j] != 0:
            continue
        if full:
            hs[0] = s
            hi[0] = base + j
            _sift_down(hs, hi, size, 0)
        else:
            _push(hs, hi, size, s, base + j)
            size += 1
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
    """``out[j] = <items[base + j], q>`` for ``j < cnt``."""
    d = q.shape[0]
    dv = d - d % _F32_LANES
    for j in range(cnt):
        r = base + j
        acc = _row_dot_f32(items, r, q, 0, dv, _F32_LANES)
        for t in range(dv, d):
            acc += items[r, t] * q[t]
        out[j] = acc


@_jit_exact
def _dots_i8(codes, scales, base, cnt, q, bias, acc, out):  # type: ignore[no-untyped-def]
    """``out[j] = float32(<codes[base + j], q>) * scales[base + j]`` for ``j < cnt`` (the rank).

    ``bias`` is ``128 * sum(q)``: every product below is ``(c + 128) * q`` (see ``_row_dot_i8``).
    The sums go to the int32 scratch ``acc`` one 64-byte column chunk at a time for all the block's
    rows: each (row, chunk) step is then straight-line code (one ``vpdpbusd`` and its reduction)
    instead of a short loop per row.
    """
    d = q.shape[0]
    d_wide = d - d % _I8_LANES
    d_vec = d - d % _I8_TAIL_LANES
    acc[:cnt] = 0
    for t in range(0, d_wide, _I8_LANES):
        for j in range(cnt):
            _prefetch(codes, base + j, t)  # this line of the row _PREFETCH_AHEAD bytes ahead
            acc[j] += _row_dot_i8(codes, base + j, q, t, t + _I8_LANES, _I8_LANES)
    for t in range(d_wide, d_vec, _I8_TAIL_LANES):
        for j in range(cnt):
            acc[j] += _row_dot_i8(codes, base + j, q, t, t + _I8_TAIL_LANES, _I8_TAIL_LANES)
    for t in range(d_vec, d):
        for j in range(cnt):
            acc[j] += (np.int32(codes[base + j, t]) + _I8_BIAS) * np.int32(q[t])
    block_scales = scales[base : base + cnt]
    for j in range(cnt):
        out[j] = np.float32(np.int32(acc[j] - bias)) * block_scales[j]


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
    acc = np.empty(_BLOCK, dtype=np.int32)
    sizes = np.zeros(qcodes.shape[0], dtype=np.int64)
    biases = np.empty(qcodes.shape[0], dtype=np.int32)
    for i in range(qcodes.shape[0]):
        biases[i] = _I8_BIAS * np.sum(qcodes[i].astype(np.int32))
    for base in range(0, n, _BLOCK):
        cnt = min(_BLOCK, n - base)
        for i in range(qcodes.shape[0]):
            _dots_i8(codes, scales, base, cnt, qcodes[i], biases[i], acc, sc)
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


@_jit_exact
def _screen_scan(  # type: ignore[no-untyped-def]
    packed, scales, errs, norms, n, qc, qs, qn, dqn, c, ex, ex_row, lb_s, lb_i, cid, cup
):
    """Stage 1 of the screened top-k for one query (bounds in float64, which is tighter than
    the float32 of the C kernel and still a bound): candidates with their upper bounds go to
    ``cid``/``cup``; returns ``(count, T)``, T the final threshold (see ``screen.py``)."""
    k = lb_s.shape[0]
    size = 0
    t = -np.inf
    count = 0
    chunks = packed.shape[1]
    for row in range(n):
        g = row // 16
        r = row % 16
        acc = 0
        for ch in range(chunks):
            for u in range(4):
                acc += (np.int32(packed[g, ch, r, u]) - 128) * np.int32(qc[ch * 4 + u])
        approx = acc * (np.float64(scales[row]) * qs)
        eps = np.float64(errs[row]) * qn + np.float64(norms[row]) * dqn
        up = approx + eps + c
        if not up >= t or (ex_row >= 0 and ex[ex_row + row] != 0):
            continue
        cid[count] = row
        cup[count] = up
        count += 1
        if errs[row] == np.inf:
            continue
        low = approx - eps - c
        if size < k:
            _push(lb_s, lb_i, size, low, row)
            size += 1
        elif low > lb_s[0]:
            lb_s[0] = low
            lb_i[0] = row
            _sift_down(lb_s, lb_i, size, 0)
        if size == k:
            t = lb_s[0]
    return count, t


@_jit_exact
def _screen_rescore(items, q, cid, cup, count, t, hs, hi):  # type: ignore[no-untyped-def]
    """Stage 2: float32 scores of the candidates whose upper bound reaches ``t``, selected into
    the heap ``hs``/``hi`` (ids ascending: equal scores keep the lower index); returns its size."""
    k = hs.shape[0]
    size = 0
    one = np.empty(1, dtype=np.float32)
    for j in range(count):
        if not cup[j] >= t:
            continue
        row = cid[j]
        _dots_f32(items, row, 1, q, one)
        s = one[0]
        if s != s:
            continue
        if size < k:
            _push(hs, hi, size, s, row)
            size += 1
        elif s > hs[0]:
            hs[0] = s
            hi[0] = row
            _sift_down(hs, hi, size, 0)
    return size


def topk_screened(
    screened: ScreenedItems,
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
) -> Result:
    """Screened float32 top-k (same contract as ``reference.topk_screened``)."""
    n, d = screened.shape
    b = queries.shape[0]
    ids, scores, counts = empty_result(b, k)
    ex, stride = _exclude_args(exclude, n)
    terms = query_terms(queries, screened.max_norm)
    chunks = screened.packed.shape[1]
    qc = np.zeros(chunks * 4, dtype=np.int8)
    lb_s = np.empty(k, dtype=np.float64)
    lb_i = np.empty(k, dtype=np.int64)
    cid = np.empty(n, dtype=np.int64)
    cup = np.empty(n, dtype=np.float64)
    for i in range(b):
        if not terms.usable[i]:
            row_ex = None if exclude is None else exclude if exclude.ndim == 1 else exclude[i]
            one = topk_f32(screened.items, queries[i : i + 1], row_ex, k)
            ids[i], scores[i], counts[i] = one[0][0], one[1][0], one[2][0]
            continue
        qc[:d] = terms.codes[i]
        count, t = _screen_scan(
            screened.packed, screened.scales, screened.errs, screened.norms, n, qc,
            float(terms.scales[i]), float(terms.norms[i]), float(terms.errs[i]), slack(d), ex,
            -1 if stride < 0 else i * stride, lb_s, lb_i, cid, cup,
        )  # fmt: skip
        size = _screen_rescore(screened.items, queries[i], cid, cup, count, t, scores[i], ids[i])
        counts[i] = _finish(scores[i], ids[i], size)
    return ids, scores, counts
