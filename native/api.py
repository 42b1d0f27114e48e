"""``topk``: the best ``k`` catalog items for one query or a batch, by inner product."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pocketrec.native import registry
from pocketrec.native.arguments import prepare
from pocketrec.native.int8 import Int8Items, quantize_rows
from pocketrec.native.result import finalize
from pocketrec.native.screen import ScreenedItems


def topk(
    items: npt.NDArray[np.float32] | Int8Items | ScreenedItems,
    query: npt.NDArray[np.float32],
    k: int,
    *,
    exclude: npt.NDArray[np.bool_] | None = None,
    backend: str = "auto",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Return ``(ids, scores)`` of the ``k`` items with the largest inner product with ``query``.

    Args:
        items: the catalog, C-contiguous float32 ``[N, D]``, or :class:`Int8Items` from
            ``quantize_int8`` (the query is then quantized per row the same way; see
            ``pocketrec.native.int8`` for how the int8 score is formed), or
            :class:`ScreenedItems` from ``screen_int8``: the float32 result (same ids and
            scores up to float32 rounding order), found by an int8 pre-screen with a certified
            bound (see ``pocketrec.native.screen``); fastest for batches.
        query: float32 ``[D]`` for one query, or ``[B, D]`` for a batch. NaN is rejected.
        k: how many results, ``>= 1``.
        exclude: optional bool mask ``[N]`` (or ``[B, N]`` for a batch) of items never to return;
            applied inside the scan, so no over-fetching is needed.
        backend: ``"auto"`` (fastest available), ``"c"``, ``"numba"`` or ``"numpy"`` (reference).

    Returns:
        ``ids`` int64 and ``scores`` float32, best first, equal scores ordered by lower index;
        items whose score is NaN are never returned. One query: 1-D arrays of
        ``min(k, eligible)`` entries. A batch: ``[B, k]`` arrays padded with id ``-1`` and score
        ``-inf``.

    Raises:
        ValueError: ``k < 1``, dimension mismatch, wrong dtype or rank, NaN in the query, a
            non-contiguous catalog, a malformed mask, or an unknown backend.

    Thread safety: safe to call from several threads at once; the C and numba backends release
    the GIL while they scan.
    """
    call = prepare(items, query, k, exclude)
    impl = registry.load(registry.resolve(backend))
    if isinstance(call.items, ScreenedItems):
        result = impl.topk_screened(call.items, call.queries, call.exclude, call.k)
    elif isinstance(call.items, Int8Items):
        qcodes, qscales = quantize_rows(call.queries)
        result = impl.topk_i8(
            call.items.codes, call.items.scales, qcodes, qscales, call.exclude, call.k
        )
    else:
        result = impl.topk_f32(call.items, call.queries, call.exclude, call.k)
    return finalize(result, single=call.single, k=call.k_requested)
