"""Latency of the pocketrec top-k kernels against numpy, faiss and the memory floor.

One query at a time (k = 10, inner product), over a random standard-normal catalog of N x D
float32 rows (and its int8 quantization). Every method sees the same catalog and the same
pre-generated queries, in the same order. The script prints the median latency per method and
catalog size, the target ratios with PASS/MISS, and checks that every float32 method returns the
top-k ids of numpy float32 (it aborts if a pocketrec float32 backend disagrees).

Run from the repository root (faiss is optional: ``pip install -e .[bench]``):

    python bench/bench_topk.py [--sizes 10000,100000,1000000] [--dim 64] [--json out.json]

A full run (N up to 1M) takes about a minute or two. Machines are shared and noisy: compare
medians and ratios only, never single timings. ``OPENBLAS_CORETYPE`` is reported, not changed.
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
from pocketrec.native import Int8Items, backends, quantize_int8, topk

try:
    import faiss
except ImportError:  # faiss is a bench extra, never a runtime dependency
    faiss = None

F32 = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
Runner = Callable[[F32], Any]

# Method names (rows of the table); the ratios below refer to them.
C_F32 = "pocketrec f32 c"
NUMBA_F32 = "pocketrec f32 numba"
C_I8 = "pocketrec int8 c"
NUMBA_I8 = "pocketrec int8 numba"
NUMPY_PEER = "numpy f32 (matvec + argpartition)"
FAISS_FLAT = "faiss IndexFlatIP"
FAISS_SQ8 = "faiss IndexScalarQuantizer QT_8bit"
FLOOR_F32 = "memory floor f32 (N*D*4 B)"
FLOOR_I8 = "memory floor int8 (N*D + 4N B)"

NO_FAISS = "faiss is not installed: the faiss rows are skipped (pip install faiss-cpu)"
NUMPY_INT8_MAX_N = 100_000  # the numpy int8 reference is slow; skip it above this size


@dataclass
class Method:
    """One timed method: ``run(query)`` returns the top-k ids (or whatever the method returns)."""

    name: str
    kind: str  # "f32" (must match numpy float32), "i8" (overlap reported) or "f32-peer"
    run: Runner
    ids: Callable[[Any], Ids]
    must_match: bool = False  # abort when it disagrees with numpy float32


@dataclass
class SizeResult:
    median_ns: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    check: dict[str, str] = field(default_factory=dict)


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
        from pocketrec.native import c_backend

        meta["c_isa"] = c_backend.available_isas()[-1]
        meta["c_isas"] = c_backend.available_isas()
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
    print(f"- C backend ISA path: {meta['c_isa']}" + (f" (available: {isas})" if isas else ""))
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


def _numba_stream_sum() -> Callable[[F32], float] | None:
    try:
        import numba
    except ImportError:
        return None

    # fastmath lets LLVM split the sum over several SIMD accumulators, so the loop is bound by
    # how fast one core can stream memory, not by the latency of a serial add chain.
    @numba.njit(fastmath=True, nogil=True)
    def stream_sum(a: F32) -> float:
        acc = np.float32(0.0)
        for i in range(a.shape[0]):
            acc += a[i]
        return acc

    return stream_sum  # type: ignore[no-any-return]


def measure_read_bandwidth(megabytes: int, repeats: int) -> dict[str, float]:
    """Single-thread streaming read bandwidth in bytes/s, per method.

    Method: sum every element of a float32 array much larger than the last-level cache, on the
    calling thread, and take the median time of ``repeats`` passes (after one untimed pass that
    faults pages and warms the TLB). The sum does one add per 4 bytes read, far below what a core
    can compute, so its time is the time to stream the array from DRAM -- the same access pattern
    as a top-k scan over the catalog. Two readers are timed: numba (vectorized, several
    accumulators) and ``np.add.reduce`` (numpy's SIMD pairwise sum); the faster one is taken as
    the achievable bandwidth. The array is filled with ``np.ones`` (written): ``np.zeros`` would map
    the kernel's shared zero page and be read from cache.
    """
    a = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    readers: dict[str, Callable[[F32], Any]] = {"np.add.reduce": np.add.reduce}
    stream_sum = _numba_stream_sum()
    if stream_sum is not None:
        stream_sum(a[:1024])  # compile
        readers["numba streaming sum"] = stream_sum
    result = {}
    for name, reader in readers.items():
        reader(a)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            reader(a)
            times.append(time.perf_counter_ns() - t0)
        result[name] = a.nbytes / (statistics.median(times) * 1e-9)
    del a
    return result


# ------------------------------------------------------------------------------------------------
# Methods.


def _numpy_topk(items: F32, q: F32, k: int) -> Ids:
    scores = items @ q
    n = scores.shape[0]
    part = np.argpartition(scores, n - k)[n - k :]
    return part[np.argsort(-scores[part], kind="stable")]


def _pocketrec(items: F32 | Int8Items, k: int, backend: str, q: F32) -> Any:
    return topk(items, q, k, backend=backend)


def _c_kernel(items: F32, k: int, q: F32) -> Any:
    from pocketrec.native import c_backend

    return c_backend.topk_f32(items, q[None, :], None, k)


def _faiss_search(index: Any, k: int, q: F32) -> Any:
    return index.search(q[None, :], k)


def _first(result: Any) -> Ids:
    return np.asarray(result[0]).reshape(-1)


def _identity(result: Any) -> Ids:
    return np.asarray(result)


def _faiss_ids(result: Any) -> Ids:
    return np.asarray(result[1]).reshape(-1)


def _c_kernel_ids(result: Any) -> Ids:
    ids, _, counts = result
    return np.asarray(ids[0, : int(counts[0])])


def build_methods(items: F32, i8: Int8Items, k: int, notes: list[str]) -> list[Method]:
    """Every method for one catalog, in table order (the faiss indexes are built here)."""
    n, d = items.shape
    available = backends()
    methods = [
        Method(
            f"pocketrec f32 {b}", "f32", functools.partial(_pocketrec, items, k, b), _first, True
        )
        for b in available
    ]
    if "c" in available:
        methods.append(
            Method(
                "pocketrec f32 c, kernel only (no API checks)",
                "f32",
                functools.partial(_c_kernel, items, k),
                _c_kernel_ids,
                True,
            )
        )
    for b in ("c", "numba", "numpy"):
        if b not in available:
            continue
        if b == "numpy" and n > NUMPY_INT8_MAX_N:
            continue
        methods.append(
            Method(f"pocketrec int8 {b}", "i8", functools.partial(_pocketrec, i8, k, b), _first)
        )
    methods.append(
        Method(NUMPY_PEER, "f32-peer", functools.partial(_numpy_topk, items, k=k), _identity)
    )
    if faiss is None:
        if NO_FAISS not in notes:
            notes.append(NO_FAISS)
        return methods
    flat = faiss.IndexFlatIP(d)
    flat.add(items)
    methods.append(Method(FAISS_FLAT, "f32", functools.partial(_faiss_search, flat, k), _faiss_ids))
    sq8 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq8.train(items)
    sq8.add(items)
    methods.append(Method(FAISS_SQ8, "i8", functools.partial(_faiss_search, sq8, k), _faiss_ids))
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


def check(methods: list[Method], items: F32, queries: F32, k: int, n_check: int) -> dict[str, str]:
    """Compare every method's ids with numpy float32 on the first ``n_check`` queries."""
    qs = queries[:n_check]
    want = [_numpy_topk(items, q, k) for q in qs]
    got = {m.name: [m.ids(m.run(q)) for q in qs] for m in methods}
    out: dict[str, str] = {}
    for m in methods:
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
) -> tuple[dict[str, float], dict[str, int]]:
    """Median latency (ns) of every method. Methods are interleaved over ``args.rounds`` rounds
    so that slow drifts of a shared machine hit all of them alike; the j-th call of every method
    uses query j."""
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
    medians = {name: float(statistics.median(s)) for name, s in samples.items()}
    return medians, {name: len(s) for name, s in samples.items()}


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
    value: float | None
    target: str
    passed: bool | None
    why: str = ""


def ratios(results: dict[int, SizeResult], sizes: list[int]) -> list[Ratio]:
    """The target ratios; ``value`` is None (n/a) when a method or size was not run."""
    out: list[Ratio] = []

    def add(label: str, n: int, num: str, den: str, target: str, ok: Callable[[float], bool]):
        med = results[n].median_ns if n in results else {}
        if n not in results:
            out.append(Ratio(label, n, None, target, None, f"N={fmt_n(n)} not run"))
        elif num not in med or den not in med:
            missing = num if num not in med else den
            out.append(Ratio(label, n, None, target, None, f"{missing} not measured"))
        else:
            value = med[num] / med[den]
            out.append(Ratio(label, n, value, target, ok(value)))

    for n in sizes:
        add("faiss IndexFlatIP / C f32", n, FAISS_FLAT, C_F32, ">= 1.0", lambda v: v >= 1.0)
    add("numpy f32 / C f32", 100_000, NUMPY_PEER, C_F32, ">= 3", lambda v: v >= 3.0)
    add("C f32 / memory floor f32", 1_000_000, C_F32, FLOOR_F32, "<= 1.15", lambda v: v <= 1.15)
    add("faiss IndexFlatIP / C int8", 1_000_000, FAISS_FLAT, C_I8, ">= 2.5", lambda v: v >= 2.5)
    for n in sizes:
        add("numba f32 / C f32", n, NUMBA_F32, C_F32, "<= 1.3", lambda v: v <= 1.3)
    for n in sizes:
        add("numba int8 / C int8", n, NUMBA_I8, C_I8, "<= 1.3", lambda v: v <= 1.3)
    return out


def report(
    results: dict[int, SizeResult], sizes: list[int], bandwidth: dict[str, float], args: Any
) -> list[Ratio]:
    names: list[str] = []
    for n in sizes:
        names += [m for m in results[n].median_ns if m not in names]
    cols = [fmt_n(n) for n in sizes]
    print()
    print(
        f"## Median latency, one query, D={args.dim}, k={args.k} "
        f"(calls per cell: {min(min(r.samples.values()) for r in results.values())}+)"
    )
    print()
    rows = [[name] + [fmt_time(results[n].median_ns.get(name)) for n in sizes] for name in names]
    print(markdown_table(["method", *cols], rows))
    best = max(bandwidth, key=bandwidth.__getitem__)
    print()
    print(
        "Memory floor = bytes scanned / single-thread read bandwidth "
        + ", ".join(f"{k}: {v / 1e9:.1f} GB/s" for k, v in bandwidth.items())
        + f" (uses {best}); catalogs that fit in cache can beat it."
    )
    print()
    print("## Top-k ids vs numpy float32 (float32: same ids; int8: mean top-k overlap)")
    print()
    checked = [name for name in names if any(name in results[n].check for n in sizes)]
    rows = [[name] + [results[n].check.get(name, "-") for n in sizes] for name in checked]
    print(markdown_table(["method", *cols], rows))
    print()
    print("## Ratios")
    print()
    found = ratios(results, sizes)
    rows = []
    for r in found:
        mark = "n/a" if r.passed is None else ("PASS" if r.passed else "MISS")
        value = r.why if r.value is None else f"{r.value:.2f}"
        rows.append([r.label, fmt_n(r.n), value, r.target, mark])
    print(markdown_table(["ratio", "N", "value", "target", ""], rows))
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
    p.add_argument("--bandwidth-mb", type=int, default=1024, help="array size for bandwidth")
    p.add_argument("--json", metavar="PATH", help="also write all numbers to this JSON file")
    args = p.parse_args(argv)
    if not args.sizes or min(args.sizes) < args.k or args.dim < 1 or args.k < 1:
        p.error("need k >= 1, D >= 1 and every N >= k")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    meta = header(set_blas_threads(args.blas_threads))
    bandwidth = measure_read_bandwidth(args.bandwidth_mb, repeats=9)
    best_bw = max(bandwidth.values())

    sizes = sorted(set(args.sizes))
    rng = np.random.default_rng(args.seed)
    # One catalog for every size: the first N rows of the largest one (rows are contiguous).
    catalog = rng.standard_normal((max(sizes), args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)

    notes: list[str] = []
    results: dict[int, SizeResult] = {}
    for n in sizes:
        items = catalog[:n]
        i8 = quantize_int8(items)
        methods = build_methods(items, i8, args.k, notes)
        res = SizeResult()
        res.check = check(methods, items, queries, args.k, min(args.check_queries, args.queries))
        res.median_ns, res.samples = bench_size(methods, queries, args)
        res.median_ns[FLOOR_F32] = n * args.dim * 4 / best_bw * 1e9
        res.median_ns[FLOOR_I8] = (n * args.dim + 4 * n) / best_bw * 1e9
        results[n] = res
        del methods, i8
        gc.collect()
        print(f"  N={fmt_n(n)} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

    found = report(results, sizes, bandwidth, args)
    if "numpy" in backends() and sizes[-1] > NUMPY_INT8_MAX_N:
        notes.append(f"pocketrec int8 numpy (reference) is only run for N <= {NUMPY_INT8_MAX_N}")
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
                "seed": args.seed,
                "min_time_s": args.min_time,
                "rounds": args.rounds,
            },
            "read_bandwidth_bytes_per_s": bandwidth,
            "median_ns": {str(n): r.median_ns for n, r in results.items()},
            "calls": {str(n): r.samples for n, r in results.items()},
            "check": {str(n): r.check for n, r in results.items()},
            "ratios": [
                {
                    "ratio": r.label,
                    "n": r.n,
                    "value": r.value,
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
