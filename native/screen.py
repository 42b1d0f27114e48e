"""An int8-screened float32 catalog: exact float32 top-k with int8 arithmetic for most of the work.

:func:`screen_int8` builds, once, an int8 shadow of a float32 catalog ``v`` ``[N, D]``: per row
codes ``c`` and a scale ``s`` (``quantize_rows``: ``v~ = c * s``), and two error terms. A query
``q`` is quantized the same way at search time (``q~ = qc * qs``, codes in ``[-Q, Q]``; ``Q = 127``,
or 64 on the C ``avx2`` path whose ``vpmaddubsw`` would otherwise saturate). Then, in real numbers,

    s = <v, q> = s~ + <v - v~, q> + <v~, q - q~>,    s~ = <v~, q~> = int32(<c, qc>) * s * qs

so ``|s - s~| <= e * ||q|| + n * ||q - q~||`` (Cauchy-Schwarz) with ``e = ||v - v~||`` and
``n = ||v~||``. The float32 score ``f`` that the plain kernel computes differs from ``s`` by at most
``gamma_D * sum|v_t q_t| + D * 2^-149 <= gamma_D * (n + e) * ||q|| + D * 2^-149`` in any
summation order (``gamma_D = D u / (1 - D u)``, ``u = 2^-24``; the last term covers underflow),
and the kernels evaluate ``s~`` and the bound in float32 with a few more roundings of relative
size ``u`` of terms no larger than ``1.1 (n + e) ||q||``. All of these are covered by
``rho * (n + e) * ||q||`` with ``rho = (D + 16) * 2^-23`` (twice what they need for
``D <= PR_SCREEN_MAX_DIM``), and by the absolute slack ``c = (D + 1) * 2^-135`` (underflow of a
subnormal ``s * qs`` times a sum of up to ``D * 127^2``). So the stored error term is

    err = (e + rho * (n + e)) * (1 + 2^-20)      (rounded up to float32; ``norms`` = ``n``, too)

and ``eps = err * ||q|| + n * ||q - q~||``: every row's float32 score lies in
``[s~ - eps - c, s~ + eps + c]``. Per query the k-th largest lower bound ``tau`` of eligible rows
proves that at least k rows score ``>= tau``; a row whose upper bound is below ``tau`` cannot be in
the top k (even by a tie), so only rows with ``upper >= tau`` are rescored in float32 and the top
k of those is the top k of the catalog, with the same tie, NaN, exclusion and padding rules.

Rows with NaN or infinity, a subnormal scale, or a norm that overflows float32 get ``err = +inf``
(always candidates, never a bound). Queries that are zero, tiny, non-finite, or whose
``||q|| * max_norm`` could overflow a float32 sum fall back to the plain float32 scan.

Memory: the float32 catalog is kept (and shared, not copied); the shadow adds
``ceil(N / 16) * 16 * (4 * ceil(D / 4) + 12)`` bytes: the codes, plus 12 bytes a row (scale, error
term and norm). At D = 64 that is 76 bytes a row, 30% of the float32 catalog's 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pocketrec.native.int8 import INT8_MAX, MAX_INT8_DIM, quantize_rows

GROUP = 16  # rows interleaved per packed group (one vpdpbusd: 16 rows x 4 dims)
CHUNK = 4  # dims per 4-byte word
QUERY_MAX = INT8_MAX  # query code range of the numpy and numba paths (as C portable / VNNI)
CODE_BIAS = 128  # packed codes are stored as code + 128 (uint8)
_GROW = 1.0 + 2.0**-20  # covers the float64 rounding of the norms
_FLT_MIN = float(np.finfo(np.float32).tiny)
_FLT_MAX = float(np.finfo(np.float32).max)
_OVERFLOW = 2.0**126  # ||q|| * max_norm at or above this: float32 sums might overflow


def rho(d: int) -> float:
    """Relative slack of the bound for dimension ``d`` (see the module docstring)."""
    return (d + 16) * 2.0**-23


def slack(d: int) -> float:
    """Absolute slack ``c`` of the bound for dimension ``d`` (underflow)."""
    return float(np.ldexp(float(d + 1), -135))


def round_up(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """float32 values ``>= x`` (the nearest from above)."""
    f = x.astype(np.float32)
    return np.where(f.astype(np.float64) < x, np.nextafter(f, np.float32(np.inf)), f)


@dataclass(frozen=True)
class ScreenedItems:
    """A float32 catalog with its int8 shadow (made by :func:`screen_int8`).

    Attributes (``G = ceil(N / 16)``, ``C = ceil(D / 4)``):
        items: the float32 catalog ``[N, D]`` (the caller's array, not a copy).
        packed: uint8 ``[G, C, 16, 4]``: ``code + 128`` of row ``16 g + r``, dims ``4 c .. 4 c + 3``
            (zero codes pad rows past N and dims past D).
        scales: float32 ``[16 G]``, the per-row int8 scale (0 for padding and unbounded rows).
        errs: float32 ``[16 G]``, the error term ``err`` (``+inf``: always a candidate).
        norms: float32 ``[16 G]``, ``||v~||`` rounded up.
        max_norm: float32 upper bound of ``||v||`` over rows with a finite ``err``.
    """

    items: npt.NDArray[np.float32]
    packed: npt.NDArray[np.uint8]
    scales: npt.NDArray[np.float32]
    errs: npt.NDArray[np.float32]
    norms: npt.NDArray[np.float32]
    max_norm: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, D)``: item count and dimension."""
        n, d = self.items.shape
        return int(n), int(d)

    @property
    def nbytes(self) -> int:
        """Bytes of the shadow (the float32 catalog not counted)."""
        return int(self.packed.nbytes + self.scales.nbytes + self.errs.nbytes + self.norms.nbytes)

    def codes(self) -> npt.NDArray[np.int8]:
        """The int8 codes ``[N, D]`` in row-major order (a new array)."""
        n, d = self.shape
        groups, chunks = self.packed.shape[:2]
        rows = self.packed.transpose(0, 2, 1, 3).reshape(groups * GROUP, chunks * CHUNK)
        codes: npt.NDArray[np.int8] = (rows[:n, :d].astype(np.int16) - CODE_BIAS).astype(np.int8)
        return codes


_BUILD_ROWS = 8192  # rows quantized at a time (bounds the float64 scratch memory)


def _shadow_rows(
    rows: npt.NDArray[np.float32], d: int
) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """Packed-order codes (``code + 128``), scales, error terms and norms of some rows (float64,
    not yet rounded up); rows without a bound get codes 0, scale 0, ``err = inf``, norm 0."""
    finite = np.asarray(np.isfinite(rows).all(axis=1), dtype=np.bool_)
    codes, scales = quantize_rows(np.where(finite[:, None], rows, np.float32(0)))
    deq = codes.astype(np.float64) * scales.astype(np.float64)[:, None]  # exact
    rest = np.where(finite[:, None], rows - deq, 0.0)
    e = np.sqrt(np.einsum("ij,ij->i", rest, rest))
    norm = np.sqrt(np.einsum("ij,ij->i", deq, deq))
    err = (e + rho(d) * (norm + e)) * _GROW
    bounded = finite & ((scales == 0) | (scales >= _FLT_MIN)) & ((norm + err) * _GROW < _FLT_MAX)
    codes[~bounded] = 0
    biased = (codes.view(np.uint8) ^ np.uint8(CODE_BIAS)).astype(np.uint8)  # code + 128
    return (
        biased,
        np.where(bounded, scales, np.float32(0)),
        np.where(bounded, err, np.inf),
        np.where(bounded, norm * _GROW, 0.0),
    )


def screen_int8(items: npt.NDArray[np.float32]) -> ScreenedItems:
    """Build the int8 shadow of a C-contiguous float32 catalog ``[N, D]`` (``1 <= D <= 133144``).

    The catalog itself is kept by reference: do not modify it while the result is in use.
    """
    if not isinstance(items, np.ndarray) or items.dtype != np.float32 or items.ndim != 2:
        raise ValueError("screen_int8 expects a float32 array of shape [N, D]")
    if not items.flags.c_contiguous:
        raise ValueError("screen_int8 expects a C-contiguous catalog")
    n, d = items.shape
    if not 1 <= d <= MAX_INT8_DIM:
        raise ValueError(f"screen_int8 needs 1 <= D <= {MAX_INT8_DIM}, got D={d}")
    groups, chunks = -(-n // GROUP), -(-d // CHUNK)
    padded = np.full((groups * GROUP, chunks * CHUNK), CODE_BIAS, dtype=np.uint8)
    terms = np.zeros((3, groups * GROUP), dtype=np.float64)  # scales, errs, norms
    for start in range(0, n, _BUILD_ROWS):
        stop = min(start + _BUILD_ROWS, n)
        padded[start:stop, :d], *columns = _shadow_rows(items[start:stop], d)
        for row, values in zip(terms, columns, strict=True):
            row[start:stop] = values
    scales, errs, norms = (round_up(row) for row in terms)
    bounded = np.isfinite(errs[:n])
    max_norm = np.max(norms[:n].astype(np.float64) + errs[:n], where=bounded, initial=0.0)
    packed = padded.reshape(groups, GROUP, chunks, CHUNK).transpose(0, 2, 1, 3)
    return ScreenedItems(
        items=items,
        packed=np.ascontiguousarray(packed),
        scales=scales,
        errs=errs,
        norms=norms,
        max_norm=float(round_up(np.array([max_norm]))[0]),
    )


@dataclass(frozen=True)
class QueryTerms:
    """Quantized queries ``[B, D]`` and their bound terms (float32 ``[B]``, norms rounded up);
    ``usable[b]`` is False where the bound cannot be certified (the plain scan answers)."""

    codes: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float32]
    norms: npt.NDArray[np.float32]
    errs: npt.NDArray[np.float32]
    usable: npt.NDArray[np.bool_]


def query_terms(
    queries: npt.NDArray[np.float32], max_norm: float, qmax: int = QUERY_MAX
) -> QueryTerms:
    """Quantize ``queries`` ``[B, D]`` to codes in ``[-qmax, qmax]`` and compute their terms."""
    with np.errstate(invalid="ignore", over="ignore"):
        amax = np.max(np.abs(queries), axis=1, initial=0.0)
        usable = np.isfinite(amax) & (amax >= np.float32(_FLT_MIN * qmax))
        scales = np.where(usable, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
        safe = np.where(usable[:, None], queries, np.float32(0))
        codes = np.clip(np.rint(safe / scales[:, None]), -qmax, qmax).astype(np.int8)
        q64 = safe.astype(np.float64)
        rest = q64 - codes.astype(np.float64) * scales.astype(np.float64)[:, None]
        norms = round_up(np.sqrt(np.sum(q64 * q64, axis=1)) * _GROW)
        errs = round_up(np.sqrt(np.sum(rest * rest, axis=1)) * _GROW)
        usable &= norms.astype(np.float64) * max_norm < _OVERFLOW
    return QueryTerms(codes=codes, scales=scales, norms=norms, errs=errs, usable=usable)
