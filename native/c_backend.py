"""The C top-k backend: thin wrappers over ``csrc/topk.c`` (cffi, out-of-line API mode).

One wrapper per C call: it allocates the outputs, passes buffers without copying, checks the
return code and raises a typed error. cffi releases the GIL for the duration of each call.
Thread safety: the C kernels keep no state; concurrent calls are safe.
Importing this module raises ``ImportError`` when the extension was not built.

Code path (``isa``): ``None`` uses :func:`chosen_isa`, the path picked by measurement on first use
(see ``pocketrec.native.isa_choice``) or forced with ``POCKETREC_TOPK_ISA``; a name forces a path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import KernelError
from pocketrec.native import isa_choice
from pocketrec.native._ctopk import ffi, lib
from pocketrec.native.result import Result, empty_result
from pocketrec.native.screen import ScreenedItems

ISA_NAMES = {
    lib.PR_ISA_PORTABLE: "portable",
    lib.PR_ISA_AVX2: "avx2",
    lib.PR_ISA_AVX512: "avx512",
}


def best_isa() -> int:
    """The widest instruction set this CPU supports (a ``PR_ISA_*`` value)."""
    return int(lib.pr_best_isa())


def available_isas() -> list[str]:
    """Names of the code paths usable on this CPU, narrowest first."""
    return [ISA_NAMES[i] for i in range(best_isa() + 1)]


def int8_uses_vnni() -> bool:
    """Whether the ``avx512`` int8 path uses VNNI (``vpdpbusd``) on this CPU."""
    return bool(lib.pr_int8_vnni())


KINDS = ("f32", "f32_batch", "int8", "screened")  # kernels whose path is chosen separately
RUNTIME_KINDS = ("f32", "f32_batch", "int8")  # the kinds the runtime's catalogs use


def chosen_isa(kind: str) -> str:
    """The path ``isa=None`` uses for ``kind`` (one of ``KINDS``; ``f32_batch``: float32 with
    two or more queries; ``screened``: the int8-screened float32 kernel, timed with a batch),
    measured once a process."""
    cached = isa_choice.cached(kind)
    if cached is not None:
        return cached
    return isa_choice.choose(kind, available_isas(), _calibration_runners(kind))


def isa_report(kinds: tuple[str, ...] = KINDS) -> dict[str, str]:
    """The path ``isa=None`` uses per kernel kind (of ``kinds``), and why: ``{"f32": "avx2
    (measured)", ...}``. Makes the choices (a few ms of measurement each) not made yet."""
    chosen = {kind: chosen_isa(kind) for kind in kinds}
    why = isa_choice.choices()
    return {kind: f"{isa} ({why[kind].source})" for kind, isa in chosen.items()}


def _calibration_runners(kind: str) -> isa_choice.RunnerFactory:
    """A factory of ``{isa: run()}`` over the small scratch catalog, for ``isa_choice.choose``.
    A batch is timed on its first ``BATCH_CALIBRATION_ROWS`` rows (it does 32x the work a row),
    the screened kernel (32 queries) on four times as many."""

    def make() -> dict[str, Callable[[], object]]:
        items, queries = isa_choice.calibration_data()
        isas = available_isas()
        if kind == "f32":
            return {
                isa: functools.partial(topk_f32, items, queries[:1], None, 10, isa=isa)
                for isa in isas
            }
        if kind == "f32_batch":
            few = items[: isa_choice.BATCH_CALIBRATION_ROWS]
            return {
                isa: functools.partial(topk_f32, few, queries, None, 10, isa=isa) for isa in isas
            }
        if kind == "screened":
            from pocketrec.native.screen import screen_int8

            screened = screen_int8(items[: 4 * isa_choice.BATCH_CALIBRATION_ROWS])
            return {
                isa: functools.partial(topk_screened, screened, queries, None, 10, isa=isa)
                for isa in isas
            }
        from pocketrec.native.int8 import quantize_int8, quantize_rows

        codes = quantize_int8(items)
        qcodes, qscales = quantize_rows(queries[:1])
        return {
            isa: functools.partial(
                topk_i8, codes.codes, codes.scales, qcodes, qscales, None, 10, isa=isa
            )
            for isa in isas
        }

    return make


_ISA_VALUES = {name: int(value) for value, name in ISA_NAMES.items()}


def _isa_value(isa: str | None, kind: str) -> int:
    value = _ISA_VALUES.get(chosen_isa(kind) if isa is None else isa)
    if value is not None:
        return value
    raise ValueError(f"unknown ISA {isa!r}; known: {sorted(ISA_NAMES.values())}")


def _check(rc: int, what: str) -> None:
    if rc == lib.PR_OK:
        return
    if rc == lib.PR_E_ISA:
        raise KernelError(f"{what}: this CPU does not support the requested instruction set")
    if rc == lib.PR_E_MEM:
        raise MemoryError(f"{what}: could not allocate the batch kernel's scratch memory")
    raise KernelError(f"{what}: the C kernel rejected its arguments (code {rc})")


def _ptr(ctype: str, array: npt.NDArray[Any]) -> Any:
    return ffi.from_buffer(ctype, array)


def _exclude_args(exclude: npt.NDArray[np.uint8] | None, n: int) -> tuple[Any, int]:
    if exclude is None:
        return ffi.NULL, 0
    return _ptr("uint8_t[]", exclude), (0 if exclude.ndim == 1 else n)


def topk_f32(
    items: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
    *,
    isa: str | None = None,
) -> Result:
    """float32 top-k (same contract as ``reference.topk_f32``); ``isa`` forces a code path."""
    n, d = items.shape
    b = queries.shape[0]
    ids, scores, counts = empty_result(b, k)
    ex, stride = _exclude_args(exclude, n)
    path = _isa_value(isa, "f32" if b == 1 else "f32_batch")
    rc = lib.pr_topk_f32(
        _ptr("float[]", items), n, d, _ptr("float[]", queries), b, ex, stride, k, path,
        _ptr("int64_t[]", ids), _ptr("float[]", scores), _ptr("int64_t[]", counts),
    )  # fmt: skip
    _check(rc, "pr_topk_f32")
    return ids, scores, counts


def topk_i8(
    codes: npt.NDArray[np.int8],
    scales: npt.NDArray[np.float32],
    qcodes: npt.NDArray[np.int8],
    qscales: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
    *,
    isa: str | None = None,
) -> Result:
    """int8 top-k (same contract as ``reference.topk_i8``); ``isa`` forces a code path."""
    n, d = codes.shape
    b = qcodes.shape[0]
    ids, scores, counts = empty_result(b, k)
    ex, stride = _exclude_args(exclude, n)
    rc = lib.pr_topk_i8(
        _ptr("int8_t[]", codes), _ptr("float[]", scales), n, d, _ptr("int8_t[]", qcodes),
        _ptr("float[]", qscales), b, ex, stride, k, _isa_value(isa, "int8"), _ptr("int64_t[]", ids),
        _ptr("float[]", scores), _ptr("int64_t[]", counts),
    )  # fmt: skip
    _check(rc, "pr_topk_i8")
    return ids, scores, counts


def topk_screened_counted(
    screened: ScreenedItems,
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
    *,
    isa: str | None = None,
) -> tuple[Result, npt.NDArray[np.int64]]:
    """Screened float32 top-k and, per query, the rows it rescored in float32 (int64 ``[B]``;
    ``-1`` where the plain scan answered the query)."""
    n, d = screened.shape
    b = queries.shape[0]
    ids, scores, counts = empty_result(b, k)
    candidates = np.empty(b, dtype=np.int64)
    ex, stride = _exclude_args(exclude, n)
    rc = lib.pr_topk_screened(
        _ptr("float[]", screened.items), _ptr("uint8_t[]", screened.packed),
        _ptr("float[]", screened.scales), _ptr("float[]", screened.errs),
        _ptr("float[]", screened.norms), screened.max_norm, n, d, _ptr("float[]", queries), b,
        ex, stride, k, _isa_value(isa, "screened"), _ptr("int64_t[]", ids),
        _ptr("float[]", scores), _ptr("int64_t[]", counts), _ptr("int64_t[]", candidates),
    )  # fmt: skip
    _check(rc, "pr_topk_screened")
    return (ids, scores, counts), candidates


def topk_screened(
    screened: ScreenedItems,
    queries: npt.NDArray[np.float32],
    exclude: npt.NDArray[np.uint8] | None,
    k: int,
    *,
    isa: str | None = None,
) -> Result:
    """Screened float32 top-k (same contract as ``reference.topk_screened``)."""
    return topk_screened_counted(screened, queries, exclude, k, isa=isa)[0]
