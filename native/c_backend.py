"""The C top-k backend: thin wrappers over ``csrc/topk.c`` (cffi, out-of-line API mode).

One wrapper per C call: it allocates the outputs, passes buffers without copying, checks the
return code and raises a typed error. cffi releases the GIL for the duration of each call.
Thread safety: the C kernels keep no state; concurrent calls are safe.
Importing this module raises ``ImportError`` when the extension was not built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import KernelError
from pocketrec.native._ctopk import ffi, lib
from pocketrec.native.result import Result, empty_result

ISA_NAMES = {
    lib.PR_ISA_PORTABLE: "portable",
    lib.PR_ISA_AVX2: "avx2",
    lib.PR_ISA_AVX512_VNNI: "avx512_vnni",
}


def best_isa() -> int:
    """The widest instruction set this CPU supports (a ``PR_ISA_*`` value)."""
    return int(lib.pr_best_isa())


def available_isas() -> list[str]:
    """Names of the code paths usable on this CPU, narrowest first."""
    return [ISA_NAMES[i] for i in range(best_isa() + 1)]


def _isa_value(isa: str | None) -> int:
    if isa is None:
        return best_isa()
    for value, name in ISA_NAMES.items():
        if name == isa:
            return int(value)
    raise ValueError(f"unknown ISA {isa!r}; known: {sorted(ISA_NAMES.values())}")


def _check(rc: int, what: str) -> None:
    if rc == lib.PR_OK:
        return
    if rc == lib.PR_E_ISA:
        raise KernelError(f"{what}: this CPU does not support the requested instruction set")
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
    rc = lib.pr_topk_f32(
        _ptr("float[]", items), n, d, _ptr("float[]", queries), b, ex, stride, k,
        _isa_value(isa), _ptr("int64_t[]", ids), _ptr("float[]", scores),
        _ptr("int64_t[]", counts),
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
        _ptr("float[]", qscales), b, ex, stride, k, _isa_value(isa), _ptr("int64_t[]", ids),
        _ptr("float[]", scores), _ptr("int64_t[]", counts),
    )  # fmt: skip
    _check(rc, "pr_topk_i8")
    return ids, scores, counts
