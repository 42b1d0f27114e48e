"""Validation of :func:`pocketrec.native.topk` arguments, shared by every backend.

Everything a backend receives has been checked here: dtypes, shapes, contiguity, NaN in queries,
and ``k``. Catalogs are never copied behind the caller's back (a float64 or strided catalog is an
error); queries and masks are small and are made contiguous when needed.
"""

from __future__ import annotations

import operator
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from pocketrec.native.int8 import MAX_INT8_DIM, Int8Items
from pocketrec.native.screen import ScreenedItems

Items: TypeAlias = npt.NDArray[np.float32] | Int8Items | ScreenedItems


class TopKCall(NamedTuple):
    """A validated call: ``queries`` float32 ``[B, D]``; ``exclude`` uint8 ``[N]`` (shared by all
    queries), ``[B, N]`` (one row per query) or ``None``; ``k`` already clamped to ``max(N, 1)``.

    A NamedTuple rather than a frozen dataclass: it is built on every call, and this is cheaper.
    """

    items: Items
    queries: npt.NDArray[np.float32]
    exclude: npt.NDArray[np.uint8] | None
    k: int
    k_requested: int
    single: bool


def check_k(k: object) -> int:
    """``k`` as a positive int, or ``ValueError``."""
    if isinstance(k, bool | np.bool_):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    try:
        value = operator.index(k)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"k must be a positive integer, got {k!r}") from None
    if value < 1:
        raise ValueError(f"k must be >= 1, got {value}")
    return value


def _check_items(items: object) -> Items:
    if isinstance(items, ScreenedItems):
        return items  # checked by screen_int8
    if isinstance(items, Int8Items):
        if not 1 <= items.shape[1] <= MAX_INT8_DIM:
            raise ValueError(f"int8 items must have dimension 1 <= D <= {MAX_INT8_DIM}")
        return items
    if not isinstance(items, np.ndarray):
        raise ValueError(
            "items must be a float32 numpy array [N, D], Int8Items or ScreenedItems, got "
            f"{type(items).__name__}"
        )
    if items.ndim != 2:
        raise ValueError(f"items must be 2-D [N, D], got shape {items.shape}")
    if items.dtype != np.float32:
        raise ValueError(
            f"items must be float32, got {items.dtype}; convert the catalog once with "
            "items.astype(np.float32) (or quantize_int8 it)"
        )
    if items.shape[1] < 1:
        raise ValueError("items must have dimension D >= 1")
    if not items.flags.c_contiguous:
        raise ValueError(
            "items must be C-contiguous [N, D] (the kernel scans rows in place; a strided view "
            "cannot be used): pass np.ascontiguousarray(items) once"
        )
    return items


def _check_queries(query: object, d: int) -> tuple[npt.NDArray[np.float32], bool]:
    if not isinstance(query, np.ndarray):
        raise ValueError(f"query must be a float32 numpy array, got {type(query).__name__}")
    if query.dtype != np.float32:
        raise ValueError(f"query must be float32, got {query.dtype}")
    if query.ndim not in (1, 2):
        raise ValueError(f"query must be [D] or [B, D], got shape {query.shape}")
    if query.shape[-1] != d:
        raise ValueError(f"dimension mismatch: query has D={query.shape[-1]} but items have D={d}")
    # A sum of squares is NaN exactly when some entry is NaN (infinities only give +inf), and it
    # needs no temporary mask: the cheapest complete check on the per-call path.
    if np.isnan(np.vdot(query, query)):
        raise ValueError("query contains NaN")
    single = query.ndim == 1
    return np.ascontiguousarray(query.reshape(1, d) if single else query), single


def _check_exclude(exclude: object, n: int, b: int, single: bool) -> npt.NDArray[np.uint8] | None:
    if exclude is None:
        return None
    if not isinstance(exclude, np.ndarray) or exclude.dtype != np.bool_:
        got = exclude.dtype if isinstance(exclude, np.ndarray) else type(exclude).__name__
        raise ValueError(f"exclude must be a boolean numpy array, got {got}")
    allowed = [(n,)] if single else [(n,), (b, n)]
    if exclude.shape not in allowed:
        want = " or ".join(str(s) for s in allowed)
        raise ValueError(f"exclude must have shape {want}, got {exclude.shape}")
    return np.ascontiguousarray(exclude).view(np.uint8)


def prepare(items: object, query: object, k: object, exclude: object) -> TopKCall:
    """Validate the arguments of ``topk`` and return them in the form backends take."""
    k_value = check_k(k)
    checked = _check_items(items)
    n, d = checked.shape
    queries, single = _check_queries(query, d)
    mask = _check_exclude(exclude, n, queries.shape[0], single)
    return TopKCall(
        items=checked,
        queries=queries,
        exclude=mask,
        k=min(k_value, max(n, 1)),
        k_requested=k_value,
        single=single,
    )
