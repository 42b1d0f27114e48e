"""Latency of the pocketrec top-k kernels against numpy, faiss and a measured memory floor.

One query at a time (k = 10, inner product), over a random standard-normal catalog of N x D
float32 rows (and its int8 quantization), plus one batch of 32 queries. Every method sees the same
catalog and the same pre-generated queries, in the same order; methods are interleaved over
several rounds so that a shared machine's drifts hit them alike. Rows:

- the C kernels through ``topk`` (``auto``: the code path chosen by measurement, see
  ``pocketrec.native.isa_choice``), and each C code path forced (``portable``, ``avx2``,
  ``avx512``; kernel call only, as is the ``auto`` kernel row they are compared with);
- numba, numpy (matvec + argpartition) and faiss (``IndexFlatIP``, ``IndexScalarQuantizer``
  8-bit; skipped with a note when faiss is not installed);
- the memory floor: a streaming read of the same bytes (the float32 catalog; the int8 codes and
  scales), timed like a method, interleaved with the others;
- batch B = 32: one call with 32 queries (C, numba, faiss);
- the int8-screened float32 catalog (``screen_int8``, C): one query, and one batch of 32; its
  results must be numpy float32's ids like every float32 method. Per N the script also prints
  how many rows per query the screen rescored in float32, and how long the shadow took to build.

For each method and N it prints the minimum and the median call time and each one's ratio to the
floor's, the target ratios with PASS/MISS, and checks that every float32 method returns the top-k
ids of numpy float32 (it aborts if a pocketrec float32 backend disagrees).

Run from the repository root (faiss is optional: ``pip install -e .[bench]``):

    python bench/bench_topk.py [--sizes 10000,100000,1000000] [--dim 64] [--json out.json]

A full run takes a few minutes. Machines are shared and noisy: compare ratios from one run, and
runs with each other, never single timings. ``OPENBLAS_CORETYPE`` is reported, not changed.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import pocketrec
from pocketrec.native import Int8Items, ScreenedItems, backends, quantize_int8, screen_int8, topk

try:
    import faiss
except ImportError:  # faiss is a bench extra, never a runtime dependency
    faiss = None

F32 = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
Runner = Callable[[F32], Any]

# Method names (rows of the table); the ratios below refer to them.
C_F32 = "pocketrec f32 c (topk, auto)"
C_F32_KERNEL = "pocketrec f32 c kernel auto"
NUMBA_F32 = "pocketrec f32 numba"
C_I8 = "pocketrec int8 c (topk, auto)"
C_I8_KERNEL = "pocketrec int8 c kernel auto"
NUMBA_I8 = "pocketrec int8 numba"
NUMPY_PEER = "numpy f32 (matvec + argpartition)"
FAISS_FLAT = "faiss IndexFlatIP"
FAISS_SQ8 = "faiss IndexScalarQuantizer QT_8bit"
FLOOR_F32 = "memory floor f32 (stream read N*D*4 B)"
FLOOR_I8 = "memory floor int8 (stream read N*D + 4N B)"
BATCH = 32
C_F32_BATCH = f"pocketrec f32 c, batch of {BATCH} (one call)"
NUMBA_F32_BATCH = f"pocketrec f32 numba, batch of {BATCH} (one call)"
FAISS_FLAT_BATCH = f"faiss IndexFlatIP, batch of {BATCH} (one call)"
C_SCREENED = "pocketrec screened c (topk, auto)"
C_SCREENED_BATCH = f"pocketrec screened c, batch of {BATCH} (one call)"


def forced(kind: str, isa: str) -> str:
    """Row name of a forced C code path (``kind`` is ``"f32"`` or ``"int8"``)."""
    return f"pocketrec {kind} c kernel {isa} (forced)"


NO_FAISS = "faiss is not installed: the faiss rows are skipped (pip install faiss-cpu)"
NUMPY_INT8_MAX_N = 100_000  # the numpy int8 reference is slow; skip it above this size


@dataclass
class Method:
    """One timed method: ``run(query)`` returns the top-k ids (or whatever the method returns)."""

    name: str
    # "f32" (must match numpy float32), "i8" (overlap reported), "f32-peer", "floor" (not
    # checked) or "batch" (ids of every query of the batch checked against numpy)
    kind: str
    run: Runner
    ids: Callable[[Any], Ids]
    must_match: bool = False  # abort when it disagrees with numpy float32


@dataclass
class SizeResult:
    min_ns: dict[str, float] = field(default_factory=dict)
    median_ns: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    check: dict[str, str] = field(default_factory=dict)
    screen: dict[str, float] = field(default_factory=dict)  # candidates per query, build time


# ------------------------------------------------------------------------------------------------
# Environment: BLAS threads, versions.


def _openblas_libs() -> list[tuple[str, Any, Any]]:
    """(path, get_num_threads, set_num_threads) for every OpenBLAS mapped in this process."""
    found: list[tuple[str, Any, Any]] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return found
    names = [
        ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
        ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
        ("openblas_get_num_threads", "openblas_set_num_threads"),
    ]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in names:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                found.append((path, getattr(lib, get_name), getattr(lib, set_name)))
                break
    return found


def set_blas_threads(n: int) -> str:
    """Set (n >= 1) or leave (n == 0) the thread count of numpy's OpenBLAS; describe the result."""
    libs = [lib for lib in _openblas_libs() if "numpy" in lib[0]] or _openblas_libs()
    if not libs:
        return "unknown (no OpenBLAS found in this process)"
    path, get_threads, set_threads = libs[0]
    if n > 0:
        set_threads(n)
    how = f"set by --blas-threads {n}" if n > 0 else "library default"
    return f"{get_threads()} ({how}; {os.path.basename(path)})"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(blas_threads: str) -> dict[str, Any]:
    """Print and return versions, the C ISA path and thread settings."""
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "pocketrec": pocketrec.__version__,
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "not installed") if faiss else "not installed",
        "cpu": _cpu_model(),
        "backends": backends(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
    }
    try:
        import numba

        meta["numba"] = numba.__version__
        meta["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        meta["numba"] = "not installed"
    if "c" in meta["backends"]:
        from pocketrec.native import c_backend, isa_choice

        meta["c_isa"] = c_backend.isa_report()
        meta["c_isas"] = c_backend.available_isas()
        meta["c_calibration_us"] = {k: dict(c.min_us) for k, c in isa_choice.choices().items()}
    else:
        meta["c_isa"] = "C extension not built"
    if faiss is not None:
        faiss.omp_set_num_threads(1)
        meta["faiss_threads"] = int(faiss.omp_get_max_threads())
    env = {v: os.environ.get(v, "unset") for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    meta.update(cpus=os.cpu_count(), affinity=affinity, numpy_blas_threads=blas_threads, env=env)

    print("# pocketrec top-k benchmark")
    print()
    print(f"- CPU: {meta['cpu']} ({meta['cpus']} CPUs, {meta['affinity']} usable)")
    isas = ", ".join(meta.get("c_isas", []))
    print(f"- C code path used by auto: {meta['c_isa']}" + (f" (usable: {isas})" if isas else ""))
    for kind, times in meta.get("c_calibration_us", {}).items():
        if times:
            measured = ", ".join(f"{isa} {t:.0f} µs" for isa, t in times.items())
            print(f"  - {kind} calibration (fastest call on the scratch catalog): {measured}")
    print(
        f"- python {meta['python']}, pocketrec {meta['pocketrec']}, numpy {meta['numpy']}, "
        f"numba {meta['numba']}, faiss {meta['faiss']}"
    )
    print(f"- pocketrec backends: {', '.join(meta['backends'])}")
    print(f"- OPENBLAS_CORETYPE={meta['OPENBLAS_CORETYPE']} (not changed by this script)")
    print(
        f"- threads: numpy BLAS {blas_threads}; faiss OpenMP "
        f"{meta.get('faiss_threads', 'n/a')}; pocketrec c/numba: 1 per query (serial scan); "
        f"NUMBA_NUM_THREADS={meta.get('numba_threads', 'n/a')} (unused); "
        + ", ".join(f"{k}={v}" for k, v in env.items())
    )
    return meta


# ------------------------------------------------------------------------------------------------
# Memory floor.


@functools.cache
def _numba_stream_sum() -> Callable[[Any], Any] | None:
    try:
        import numba
    except ImportError:
        return None

    # fastmath lets LLVM split the sum over several SIMD accumulators, so the loop is bound by
    # how fast one core can stream memory, not by the latency of a serial add chain.
    @numba.njit(fastmath=True, nogil=True)
    def stream_sum(a: Any) -> Any:
        acc = a[0] - a[0]
        for i in range(a.shape[0]):
            acc += a[i]
        return acc

    return stream_sum


def stream_reader(arrays: list[npt.NDArray[Any]]) -> Runner:
    """A runner that reads every byte of ``arrays`` once, sequentially, on the calling thread.

    Its time is the memory floor of a scan over the same bytes: it does one add per 4 bytes,
    far below what a core can compute. Bytes are read as float32 (int8 codes as int32, so that
    no subnormal float slows the adds) by numba's vectorized sum, or ``np.add.reduce`` without
    numba.
    """
    flat = []
    for a in arrays:
        raw = a.reshape(-1).view(np.uint8)
        usable = raw[: raw.size - raw.size % 4]
        flat.append(usable.view(np.float32 if a.dtype == np.float32 else np.int32))
    summer = _numba_stream_sum()
    if summer is not None:
        for f in flat:
            summer(f[:16])  # compile for this dtype
        fn: Callable[[Any], Any] = summer
    else:
        fn = np.add.reduce

    def run(_q: F32) -> Any:
        return [fn(f) for f in flat]

    return run


# ------------------------------------------------------------------------------------------------
# Methods.


def _numpy_topk(items: F32, q: F32, k: int) -> Ids:
    scores = items @ q
    n = scores.shape[0]
    part = np.argpartition(scores, n - k)[n - k :]
    return part[np.argsort(-scores[part], kind="stable")]


def _pocketrec(items: F32 | Int8Items, k: int, backend: str, q: F32) -> Any:
    return topk(items, q, k, backend=backend)


def _c_f32(items: F32, k: int, isa: str | None, q: F32) -> Any:
    from pocketrec.native import c_backend

    return c_backend.topk_f32(items, q[None, :], None, k, isa=isa)


def _c_i8(i8: Int8Items, k: int, isa: str | None, q: F32) -> Any:
    from pocketrec.native import c_backend
    from pocketrec.native.int8 import quantize_rows

    qcodes, qscales = quantize_rows(q[None, :])
    return c_backend.topk_i8(i8.codes, i8.scales, qcodes, qscales, None, k, isa=isa)


def _faiss_search(index: Any, k: int, q: F32) -> Any:
    return index.search(q[None, :], k)


def _batch(run: Callable[[F32], Any], block: F32, _q: F32) -> Any:
    return run(block)


def _first(result: Any) -> Ids:
    return np.asarray(result[0]).reshape(-1)


def _identity(result: Any) -> Ids:
    return np.asarray(result)


def _faiss_ids(result: Any) -> Ids:
    return np.asarray(result[1]).reshape(-1)


def _kernel_ids(result: Any) -> Ids:
    ids, _, counts = result
    return np.asarray(ids[0, : int(counts[0])])


def _rows(result: Any) -> Ids:
    return np.asarray(result[0])


def _faiss_rows(result: Any) -> Ids:
    return np.asarray(result[1])


def build_methods(
    items: F32, i8: Int8Items, screened: ScreenedItems, block: F32, k: int, notes: list[str]
) -> list[Method]:
    """Every method for one catalog, in table order (the faiss indexes are built here).
    ``block`` is the batch of queries of the batch rows."""
    n, d = items.shape
    available = backends()
    partial = functools.partial
    methods = [
        Method(
            C_F32 if b == "c" else f"pocketrec f32 {b}", "f32", partial(_pocketrec, items, k, b),
            _first, True,
        )
        for b in available
        if b != "numpy"
    ]  # fmt: skip
    isas: list[str] = []
    if "c" in available:
        from pocketrec.native import c_backend

        isas = c_backend.available_isas()
        methods.append(
            Method(C_F32_KERNEL, "f32", partial(_c_f32, items, k, None), _kernel_ids, True)
        )
        methods += [
            Method(forced("f32", isa), "f32", partial(_c_f32, items, k, isa), _kernel_ids, True)
            for isa in isas
        ]
    for b in ("c", "numba", "numpy"):
        if b not in available or (b == "numpy" and n > NUMPY_INT8_MAX_N):
            continue
        name = C_I8 if b == "c" else f"pocketrec int8 {b}"
        methods.append(Method(name, "i8", partial(_pocketrec, i8, k, b), _first))
    if "c" in available:
        methods.append(Method(C_I8_KERNEL, "i8", partial(_c_i8, i8, k, None), _kernel_ids))
        methods += [
            Method(forced("int8", isa), "i8", partial(_c_i8, i8, k, isa), _kernel_ids)
            for isa in isas
        ]
    methods.append(Method(NUMPY_PEER, "f32-peer", partial(_numpy_topk, items, k=k), _identity))
    methods.append(Method(FLOOR_F32, "floor", stream_reader([items]), _identity))
    methods.append(Method(FLOOR_I8, "floor", stream_reader([i8.codes, i8.scales]), _identity))
    for b, name in (("c", C_F32_BATCH), ("numba", NUMBA_F32_BATCH)):
        if b in available:
            run = partial(_pocketrec, items, k, b)
            methods.append(Method(name, "batch", partial(_batch, run, block), _rows))
    if "c" in available:
        run = partial(_pocketrec, screened, k, "c")
        methods.append(Method(C_SCREENED, "f32", run, _first, True))
        methods.append(Method(C_SCREENED_BATCH, "batch", partial(_batch, run, block), _rows))
    if faiss is None:
        if NO_FAISS not in notes:
            notes.append(NO_FAISS)
        return methods
    flat = faiss.IndexFlatIP(d)
    flat.add(items)
    methods.append(Method(FAISS_FLAT, "f32", partial(_faiss_search, flat, k), _faiss_ids))
    sq8 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq8.train(items)
    sq8.add(items)
    methods.append(Method(FAISS_SQ8, "i8", partial(_faiss_search, sq8, k), _faiss_ids))
    run = partial(flat.search, k=k)
    methods.append(Method(FAISS_FLAT_BATCH, "batch", partial(_batch, run, block), _faiss_rows))
    return methods


# ------------------------------------------------------------------------------------------------
# Checks and timing.


def _compare_f32(items: F32, q: F32, got: Ids, want: Ids) -> str:
    """Verdict on one query: exact, tie (differs only where float32 rounding cannot decide) or
    mismatch."""
    if got.shape == want.shape and np.array_equal(got, want):
        return "exact"
    if got.shape != want.shape:
        return "mismatch"
    # Exact (float64) scores in the order each method returned them; a float32 dot product of
    # D terms is off by at most ~D * eps * sum|r_t q_t| from it.
    q64 = q.astype(np.float64)
    got_exact = items[got].astype(np.float64) @ q64
    want_exact = items[want].astype(np.float64) @ q64
    rows = np.concatenate([got, want])
    bound = float((np.abs(items[rows]).astype(np.float64) @ np.abs(q64)).max())
    tol = 2 * items.shape[1] * float(np.finfo(np.float32).eps) * bound
    return "tie" if np.allclose(got_exact, want_exact, rtol=0.0, atol=tol) else "mismatch"


def _check_batch(m: Method, items: F32, block: F32, k: int) -> str:
    """Verdict on a batch method: every query of the block against numpy float32."""
    rows = m.ids(m.run(block[0]))
    verdicts = [
        _compare_f32(items, q, rows[i], _numpy_topk(items, q, k)) for i, q in enumerate(block)
    ]
    if "mismatch" in verdicts:
        message = f"{m.name} disagrees with numpy float32 at N={items.shape[0]}"
        if m.name.startswith("pocketrec"):
            raise SystemExit(f"ABORT: {message}")
        print(f"warning: {message}", file=sys.stderr)
        return "MISMATCH"
    ties = verdicts.count("tie")
    return f"same ids, all {len(block)} queries" + (f" ({ties} rounding ties)" if ties else "")


def check(
    methods: list[Method], items: F32, queries: F32, block: F32, k: int, n_check: int
) -> dict[str, str]:
    """Compare every method's ids with numpy float32 on the first ``n_check`` queries (batch
    methods: on every query of ``block``)."""
    qs = queries[:n_check]
    want = [_numpy_topk(items, q, k) for q in qs]
    single = [m for m in methods if m.kind not in ("floor", "batch")]
    got = {m.name: [m.ids(m.run(q)) for q in qs] for m in single}
    out: dict[str, str] = {}
    for m in methods:
        if m.kind == "floor":
            continue
        if m.kind == "batch":
            out[m.name] = _check_batch(m, items, block, k)
            continue
        if m.kind == "f32-peer":
            out[m.name] = "reference"
            continue
        if m.kind == "i8":
            overlap = np.mean(
                [len(np.intersect1d(g, w)) / k for g, w in zip(got[m.name], want, strict=True)]
            )
            out[m.name] = f"overlap {overlap:.2f}"
            continue
        verdicts = [
            _compare_f32(items, q, g, w) for q, g, w in zip(qs, got[m.name], want, strict=True)
        ]
        if "mismatch" in verdicts:
            i = verdicts.index("mismatch")
            message = (
                f"{m.name} disagrees with numpy float32 at N={items.shape[0]}, query {i}: "
                f"got {got[m.name][i].tolist()}, want {want[i].tolist()}"
            )
            if m.must_match:
                raise SystemExit(f"ABORT: {message}")
            out[m.name] = "MISMATCH"
            print(f"warning: {message}", file=sys.stderr)
            continue
        ties = verdicts.count("tie")
        out[m.name] = "same ids" + (f" ({ties} rounding ties)" if ties else "")
    # The int8 backends promise identical ids to each other (see pocketrec.native.int8).
    int8 = [m.name for m in methods if m.name.startswith("pocketrec int8")]
    for name in int8[1:]:
        if any(not np.array_equal(a, b) for a, b in zip(got[name], got[int8[0]], strict=True)):
            out[name] += f", DIFFERS from {int8[0]}"
    return out


def screen_stats(screened: ScreenedItems, block: F32, k: int, build_s: float) -> dict[str, float]:
    """Rows the C screen rescored per query of ``block`` (-1: answered by the plain scan),
    the shadow's size and its build time."""
    from pocketrec.native import c_backend

    _, candidates = c_backend.topk_screened_counted(screened, block, None, k)
    screened_rows = candidates[candidates >= 0]
    return {
        "candidates_mean": float(screened_rows.mean()) if screened_rows.size else math.nan,
        "candidates_min": float(screened_rows.min()) if screened_rows.size else math.nan,
        "candidates_max": float(screened_rows.max()) if screened_rows.size else math.nan,
        "fallbacks": float(np.count_nonzero(candidates < 0)),
        "shadow_bytes": float(screened.nbytes),
        "build_s": build_s,
    }


def warm_up(run: Runner, queries: F32, min_ns: int = 50_000_000, min_calls: int = 3) -> None:
    t_end = time.perf_counter_ns() + min_ns
    i = 0
    while i < min_calls or time.perf_counter_ns() < t_end:
        run(queries[i % len(queries)])
        i += 1


def time_calls(run: Runner, queries: F32, start: int, min_ns: int, min_calls: int) -> list[int]:
    """Per-call latencies: at least ``min_calls`` calls and ``min_ns`` in total."""
    samples: list[int] = []
    n_queries = len(queries)
    t_end = time.perf_counter_ns() + min_ns
    i = start
    while len(samples) < min_calls or (time.perf_counter_ns() < t_end and len(samples) < 100_000):
        q = queries[i % n_queries]
        t0 = time.perf_counter_ns()
        run(q)
        samples.append(time.perf_counter_ns() - t0)
        i += 1
    return samples


def bench_size(
    methods: list[Method], queries: F32, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Minimum and median latency (ns) of every method, and its number of calls. Methods are
    interleaved over ``args.rounds`` rounds so that slow drifts of a shared machine hit all of
    them alike; the j-th call of every method uses query j."""
    for m in methods:
        warm_up(m.run, queries)
    samples: dict[str, list[int]] = {m.name: [] for m in methods}
    per_round_ns = int(args.min_time * 1e9 / args.rounds)
    per_round_calls = math.ceil(args.min_repeats / args.rounds)
    gc.disable()
    try:
        for _ in range(args.rounds):
            for m in methods:
                start = len(samples[m.name])
                samples[m.name] += time_calls(m.run, queries, start, per_round_ns, per_round_calls)
    finally:
        gc.enable()
    minima = {name: float(min(s)) for name, s in samples.items()}
    medians = {name: float(statistics.median(s)) for name, s in samples.items()}
    return minima, medians, {name: len(s) for name, s in samples.items()}


# ------------------------------------------------------------------------------------------------
# Report.


def fmt_n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt_time(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


@dataclass
class Ratio:
    label: str
    n: int
    value: float | None  # from the medians
    value_min: float | None  # the same ratio from the minima
    target: str
    passed: bool | None  # judged on the median ratio
    why: str = ""


def ratios(results: dict[int, SizeResult], sizes: list[int]) -> list[Ratio]:
    """The target ratios; ``value`` is None (n/a) when a method or size was not run."""
    out: list[Ratio] = []

    def add(
        label: str, n: int, num: str, den: str, target: str, ok: Callable[[float], bool],
        scale: float = 1.0,
    ) -> None:  # fmt: skip
        if n not in results:
            out.append(Ratio(label, n, None, None, target, None, f"N={fmt_n(n)} not run"))
            return
        med, low = results[n].median_ns, results[n].min_ns
        if num not in med or den not in med:
            missing = num if num not in med else den
            out.append(Ratio(label, n, None, None, target, None, f"{missing} not measured"))
            return
        value = scale * med[num] / med[den]
        out.append(Ratio(label, n, value, scale * low[num] / low[den], target, ok(value)))

    for n in sizes:
        add("faiss IndexFlatIP / C f32 (topk)", n, FAISS_FLAT, C_F32, ">= 1.0", lambda v: v >= 1.0)
    add(
        "C f32 (topk) / memory floor f32",
        1_000_000,
        C_F32,
        FLOOR_F32,
        "<= 1.15",
        lambda v: v <= 1.15,
    )
    for n in sizes:
        add(
            "C f32 kernel auto / portable", n, C_F32_KERNEL, forced("f32", "portable"), "<= 1.05",
            lambda v: v <= 1.05,
        )  # fmt: skip
    for n in sizes:
        add(
            "C int8 kernel auto / portable", n, C_I8_KERNEL, forced("int8", "portable"),
            "<= 1.05", lambda v: v <= 1.05,
        )  # fmt: skip
    add(
        "faiss IndexFlatIP / C int8 (topk)",
        1_000_000,
        FAISS_FLAT,
        C_I8,
        ">= 2.5",
        lambda v: v >= 2.5,
    )
    add(
        "C int8 (topk) / memory floor int8", 1_000_000, C_I8, FLOOR_I8, "<= 1.3", lambda v: v <= 1.3
    )
    for n in sizes:
        add("numba f32 / C f32 (topk)", n, NUMBA_F32, C_F32, "<= 1.3", lambda v: v <= 1.3)
    for n in sizes:
        add("numba int8 / C int8 (topk)", n, NUMBA_I8, C_I8, "<= 1.3", lambda v: v <= 1.3)
    for n in sizes:
        add(
            f"batch throughput: {BATCH} x C f32 (topk) / C batch of {BATCH}", n, C_F32, C_F32_BATCH,
            ">= 10", lambda v: v >= 10.0, scale=BATCH,
        )  # fmt: skip
    for n in sizes:
        add(
            f"batch throughput: {BATCH} x C f32 (topk) / C screened batch of {BATCH}", n, C_F32,
            C_SCREENED_BATCH, ">= 10", lambda v: v >= 10.0, scale=BATCH,
        )  # fmt: skip
    for n in sizes:
        add(
            f"faiss batch of {BATCH} / C batch of {BATCH}", n, FAISS_FLAT_BATCH, C_F32_BATCH,
            "(peer)", lambda v: True,
        )  # fmt: skip
    return out


def _cell(ns: float | None, floor: float | None) -> str:
    if ns is None:
        return "-"
    return fmt_time(ns) + ("" if not floor else f" (x{ns / floor:.2f})")


def report(results: dict[int, SizeResult], sizes: list[int], args: Any) -> list[Ratio]:
    names: list[str] = []
    for n in sizes:
        names += [m for m in results[n].median_ns if m not in names]
    print()
    print(
        f"## Latency per call, one query (batch rows: one call with {BATCH} queries), "
        f"D={args.dim}, k={args.k}; min and median of "
        f"{min(min(r.samples.values()) for r in results.values())}+ interleaved calls; "
        "(xR) = ratio to the memory floor's min or median of the same N (f32 floor for f32 and "
        "batch rows, int8 floor for int8 rows)"
    )
    print()
    head = ["method"]
    for n in sizes:
        head += [f"{fmt_n(n)} min", f"{fmt_n(n)} median"]
    rows = []
    for name in names:
        row = [name]
        for n in sizes:
            r = results[n]
            floor = FLOOR_I8 if "int8" in name or "QT_8bit" in name else FLOOR_F32
            row.append(_cell(r.min_ns.get(name), r.min_ns.get(floor)))
            row.append(_cell(r.median_ns.get(name), r.median_ns.get(floor)))
        rows.append(row)
    print(markdown_table(head, rows))
    print()
    for n in sizes:
        r = results[n]
        if FLOOR_F32 in r.min_ns:
            gbs = n * args.dim * 4 / r.min_ns[FLOOR_F32]
            print(f"- memory floor at N={fmt_n(n)}: {gbs:.1f} GB/s (streaming read, fastest call)")
    for n in sizes:
        sc = results[n].screen
        if sc:
            print(
                f"- screened at N={fmt_n(n)}: rows rescored in float32 per query, batch of "
                f"{BATCH}: mean {sc['candidates_mean']:.1f} (min {sc['candidates_min']:.0f}, "
                f"max {sc['candidates_max']:.0f}; {100 * sc['candidates_mean'] / n:.3f}% of N), "
                f"plain-scan fallbacks {sc['fallbacks']:.0f}; shadow built in "
                f"{sc['build_s'] * 1e3:.0f} ms ({sc['shadow_bytes'] / n:.0f} B a row)"
            )
    print()
    print("## Top-k ids vs numpy float32 (float32: same ids; int8: mean top-k overlap)")
    print()
    checked = [name for name in names if any(name in results[n].check for n in sizes)]
    rows = [[name] + [results[n].check.get(name, "-") for n in sizes] for name in checked]
    print(markdown_table(["method", *[fmt_n(n) for n in sizes]], rows))
    print()
    print("## Ratios (judged on medians; the same ratio from the minima beside it)")
    print()
    found = ratios(results, sizes)
    rows = []
    for ratio in found:
        mark = "n/a" if ratio.passed is None else ("PASS" if ratio.passed else "MISS")
        value = ratio.why if ratio.value is None else f"{ratio.value:.2f}"
        low = "-" if ratio.value_min is None else f"{ratio.value_min:.2f}"
        rows.append([ratio.label, fmt_n(ratio.n), value, low, ratio.target, mark])
    print(markdown_table(["ratio", "N", "median", "min", "target", ""], rows))
    return found


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        help="comma-separated catalog sizes N (default: 10000,100000,1000000)",
    )
    p.add_argument("--dim", type=int, default=64, help="dimension D (default 64)")
    p.add_argument("-k", "--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--queries", type=int, default=64, help="distinct random queries (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and queries")
    p.add_argument(
        "--min-time", type=float, default=0.3, help="seconds of timing per cell (default 0.3)"
    )
    p.add_argument("--min-repeats", type=int, default=9, help="calls per cell at least")
    p.add_argument("--rounds", type=int, default=3, help="interleaved passes over the methods")
    p.add_argument("--check-queries", type=int, default=8, help="queries checked against numpy")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="threads of numpy's OpenBLAS (default 1, like every other method; 0: leave as is)",
    )
    p.add_argument("--json", metavar="PATH", help="also write all numbers to this JSON file")
    args = p.parse_args(argv)
    if not args.sizes or min(args.sizes) < args.k or args.dim < 1 or args.k < 1:
        p.error("need k >= 1, D >= 1 and every N >= k")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    meta = header(set_blas_threads(args.blas_threads))

    sizes = sorted(set(args.sizes))
    rng = np.random.default_rng(args.seed)
    # One catalog for every size: the first N rows of the largest one (rows are contiguous).
    catalog = rng.standard_normal((max(sizes), args.dim), dtype=np.float32)
    queries = rng.standard_normal((max(args.queries, BATCH), args.dim), dtype=np.float32)
    block = np.ascontiguousarray(queries[:BATCH])

    notes: list[str] = []
    results: dict[int, SizeResult] = {}
    for n in sizes:
        items = catalog[:n]
        i8 = quantize_int8(items)
        t_screen = time.perf_counter()
        screened = screen_int8(items)
        build_s = time.perf_counter() - t_screen
        methods = build_methods(items, i8, screened, block, args.k, notes)
        res = SizeResult()
        if "c" in backends():
            res.screen = screen_stats(screened, block, args.k, build_s)
        n_check = min(args.check_queries, args.queries)
        res.check = check(methods, items, queries, block, args.k, n_check)
        res.min_ns, res.median_ns, res.samples = bench_size(methods, queries, args)
        results[n] = res
        del methods, i8, screened
        gc.collect()
        print(f"  N={fmt_n(n)} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

    found = report(results, sizes, args)
    if "numpy" in backends() and sizes[-1] > NUMPY_INT8_MAX_N:
        notes.append(f"pocketrec int8 numpy (reference) is only run for N <= {NUMPY_INT8_MAX_N}")
    if _numba_stream_sum() is None:
        notes.append("numba is not installed: the memory floor is read with np.add.reduce")
    for note in notes:
        print(f"\nNote: {note}")
    print(f"\nTotal time: {time.perf_counter() - t_start:.0f} s")

    if args.json:
        data = {
            "meta": meta,
            "params": {
                "sizes": sizes,
                "dim": args.dim,
                "k": args.k,
                "queries": args.queries,
                "batch": BATCH,
                "seed": args.seed,
                "min_time_s": args.min_time,
                "rounds": args.rounds,
            },
            "min_ns": {str(n): r.min_ns for n, r in results.items()},
            "median_ns": {str(n): r.median_ns for n, r in results.items()},
            "calls": {str(n): r.samples for n, r in results.items()},
            "check": {str(n): r.check for n, r in results.items()},
            "screen": {str(n): r.screen for n, r in results.items()},
            "ratios": [
                {
                    "ratio": r.label,
                    "n": r.n,
                    "value": r.value,
                    "value_min": r.value_min,
                    "target": r.target,
                    "pass": r.passed,
                    "why": r.why,
                }
                for r in found
            ],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
