"""The public ``topk`` contract: corner cases, errors, threads, int8 quality, backend choice."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from native_helpers import Variant, all_variants, assert_float_result_matches, reference_topk

from pocketrec.core.errors import BackendUnavailableError, KernelError
from pocketrec.native import Int8Items, backends, int8, quantize_int8, registry, topk

VARIANTS = all_variants()
by_name = pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)


def normal(shape: tuple[int, ...], seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- corner cases, every backend -----------------------------------------------------------


@by_name
def test_all_scores_equal_returns_lowest_indices(variant: Variant) -> None:
    items = np.ones((50, 7), dtype=np.float32)
    ids, scores = variant.topk(items, np.ones(7, dtype=np.float32), 5)
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(scores, np.full(5, 7.0, dtype=np.float32))


@by_name
def test_all_items_excluded(variant: Variant) -> None:
    items = normal((30, 5))
    ids, scores = variant.topk(items, normal((5,), 1), 3, np.ones(30, dtype=bool))
    assert ids.shape == (0,)
    assert scores.shape == (0,)
    ids2, scores2 = variant.topk(items, normal((2, 5), 1), 3, np.ones(30, dtype=bool))
    np.testing.assert_array_equal(ids2, np.full((2, 3), -1))
    assert np.isneginf(scores2).all()


@by_name
def test_k_larger_than_n(variant: Variant) -> None:
    items, query = normal((4, 9)), normal((9,), 1)
    ids, _ = variant.topk(items, query, 10)
    np.testing.assert_array_equal(ids, np.argsort(-(items @ query), kind="stable"))
    batch_ids, batch_scores = variant.topk(items, query[None, :], 6)
    assert batch_ids.shape == (1, 6)
    np.testing.assert_array_equal(batch_ids[0, :4], ids)
    np.testing.assert_array_equal(batch_ids[0, 4:], [-1, -1])
    assert np.isneginf(batch_scores[0, 4:]).all()


@by_name
def test_empty_catalog(variant: Variant) -> None:
    ids, scores = variant.topk(np.zeros((0, 3), dtype=np.float32), np.ones(3, np.float32), 2)
    assert ids.size == 0
    assert scores.size == 0


@by_name
@pytest.mark.parametrize("d", [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 300])
def test_dimensions_not_a_multiple_of_the_simd_width(variant: Variant, d: int) -> None:
    items, query = normal((1000, d), d), normal((d,), d + 1)
    got = variant.topk(items, query, 10)
    assert_float_result_matches(items, query, None, got, reference_topk(items, query, 10))
    codes = quantize_int8(items)
    for a, b in zip(variant.topk(codes, query, 10), reference_topk(codes, query, 10), strict=True):
        np.testing.assert_array_equal(a, b)


@by_name
@pytest.mark.parametrize("d", [32, 64, 128])
@pytest.mark.parametrize("n", [5, 8, 1003])
def test_specialized_dimensions_with_a_short_last_group(variant: Variant, d: int, n: int) -> None:
    """D = 32/64/128 have their own C bodies; n % 8 != 0 leaves a short last group of rows.
    Small integers make every summation order exact, so ids and scores must match exactly."""
    rng = np.random.default_rng(d + n)
    items = rng.integers(-8, 9, size=(n, d)).astype(np.float32)
    items[n - 1] = items[0]  # a tie across the first and the last group
    items[n // 2] = np.nan
    queries = rng.integers(-8, 9, size=(3, d)).astype(np.float32)
    for query in (queries[0], queries):
        for got, want in zip(
            variant.topk(items, query, 7), reference_topk(items, query, 7), strict=True
        ):
            np.testing.assert_array_equal(got, want)


@by_name
@pytest.mark.parametrize("d", [64, 100])
def test_catalogs_past_the_prefetch_threshold_match_the_reference(variant: Variant, d: int) -> None:
    """Catalogs of >= 4 MiB take the kernels' prefetching branch (PR_PREFETCH_MIN_BYTES in
    topk.c), float32 and int8: exact small-integer scores, NaN rows and ties at both ends, an
    exclusion mask, one query and a batch."""
    n = (4 << 20) // d + 1001  # past the threshold as int8 codes (and so as float32)
    rng = np.random.default_rng(n)
    items = rng.integers(-8, 9, size=(n, d)).astype(np.float32)
    items[[0, n - 1]] = 8.0  # the best rows, tied, at both ends of the scan
    items[[1, n - 2]] = np.nan
    queries = np.abs(rng.integers(1, 9, size=(3, d))).astype(np.float32)
    mask = rng.random(n) < 0.3
    mask[[0, n - 1]] = False
    for catalog in (items, quantize_int8(np.nan_to_num(items))):
        for query in (queries[0], queries):
            got = variant.topk(catalog, query, 9, mask if query.ndim == 1 else None)
            want = reference_topk(catalog, query, 9, mask if query.ndim == 1 else None)
            for got_part, want_part in zip(got, want, strict=True):
                np.testing.assert_array_equal(got_part, want_part)


@by_name
def test_zero_query_and_zero_items(variant: Variant) -> None:
    items = np.zeros((20, 6), dtype=np.float32)
    ids, scores = variant.topk(items, np.zeros(6, np.float32), 3)
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0])
    ids8, scores8 = variant.topk(quantize_int8(items), np.zeros(6, np.float32), 3)
    np.testing.assert_array_equal(ids8, [0, 1, 2])
    np.testing.assert_array_equal(scores8, [0.0, 0.0, 0.0])


@by_name
def test_nan_items_are_never_returned_and_infinities_rank(variant: Variant) -> None:
    items = normal((10, 4))
    items[2] = np.nan
    items[5] = np.inf
    query = np.ones(4, dtype=np.float32)
    ids, scores = variant.topk(items, query, 10)
    assert 2 not in ids.tolist()
    assert ids[0] == 5
    assert np.isposinf(scores[0])
    assert ids.size == 9


@by_name
def test_batch_of_one_equals_single_query(variant: Variant) -> None:
    items, query = normal((500, 33)), normal((33,), 2)
    mask = np.zeros(500, dtype=bool)
    mask[::3] = True
    ids, scores = variant.topk(items, query, 7, mask)
    batch_ids, batch_scores = variant.topk(items, query[None, :], 7, mask[None, :])
    np.testing.assert_array_equal(batch_ids[0], ids)
    np.testing.assert_array_equal(batch_scores[0], scores)


@by_name
def test_batch_with_one_shared_mask_or_one_mask_per_query(variant: Variant) -> None:
    items, queries = normal((300, 16)), normal((3, 16), 5)
    shared = np.arange(300) % 2 == 0
    ids, _ = variant.topk(items, queries, 5, shared)
    assert (ids % 2 == 1).all()
    per_query = np.zeros((3, 300), dtype=bool)
    per_query[1, :150] = True
    ids, _ = variant.topk(items, queries, 5, per_query)
    assert (ids[1] >= 150).all()
    np.testing.assert_array_equal(ids[0], variant.topk(items, queries[0], 5)[0])


@by_name
@pytest.mark.parametrize("b", [2, 31, 32, 33, 65])
def test_batches_around_the_batch_kernels_query_group(variant: Variant, b: int) -> None:
    """The C float32 batch kernel serves 32 queries per pass: sizes around it, with NaN rows,
    ties (duplicate rows) and one mask per query, agree with the reference query by query."""
    items, queries = normal((777, 21), b), normal((b, 21), b + 1)
    items[5] = np.nan
    items[100:110] = items[3]
    mask = np.random.default_rng(b).random((b, 777)) < 0.3
    got = variant.topk(items, queries, 12, mask)
    assert_float_result_matches(items, queries, mask, got, reference_topk(items, queries, 12, mask))
    assert 5 not in got[0]


def test_results_are_int64_and_float32() -> None:
    ids, scores = topk(normal((10, 3)), normal((3,), 1), 2)
    assert ids.dtype == np.int64
    assert scores.dtype == np.float32


def test_read_only_memory_mapped_catalog(tmp_path: pytest.TempPathFactory) -> None:
    items = normal((2000, 24))
    path = f"{tmp_path}/catalog.npy"
    np.save(path, items)
    mapped = np.load(path, mmap_mode="r")
    assert not mapped.flags.writeable
    codes = quantize_int8(items)
    np.save(f"{tmp_path}/codes.npy", codes.codes)
    mapped_codes = Int8Items(
        codes=np.load(f"{tmp_path}/codes.npy", mmap_mode="r"), scales=codes.scales
    )
    for name in backends():
        np.testing.assert_array_equal(
            topk(mapped, items[3], 5, backend=name)[0], topk(items, items[3], 5)[0]
        )
        np.testing.assert_array_equal(
            topk(mapped_codes, items[3], 5, backend=name)[0], topk(codes, items[3], 5)[0]
        )


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": -3}, "k must be >= 1"),
        ({"k": 2.5}, "k must be a positive integer"),
        ({"k": True}, "k must be a positive integer"),
        ({"items": np.zeros((5, 4), dtype=np.float64)}, "items must be float32, got float64"),
        ({"items": np.zeros((5, 4), dtype=np.float32).T.copy().T}, "C-contiguous"),
        ({"items": np.zeros(5, dtype=np.float32)}, "items must be 2-D"),
        ({"items": [[1.0]]}, "items must be a float32 numpy array"),
        ({"query": np.zeros(3, dtype=np.float32)}, "dimension mismatch: query has D=3"),
        ({"query": np.zeros(4, dtype=np.float64)}, "query must be float32, got float64"),
        ({"query": np.array([1, np.nan, 0, 0], dtype=np.float32)}, "query contains NaN"),
        ({"query": np.zeros((1, 1, 4), dtype=np.float32)}, "query must be [D] or [B, D]"),
        ({"exclude": np.zeros(5, dtype=np.uint8)}, "exclude must be a boolean numpy array"),
        ({"exclude": np.zeros(6, dtype=bool)}, "exclude must have shape (5,)"),
        ({"exclude": np.zeros((1, 5), dtype=bool)}, "exclude must have shape (5,)"),
        ({"backend": "cuda"}, "unknown backend 'cuda'"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_problem(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "items": np.zeros((5, 4), dtype=np.float32),
        "query": np.zeros(4, dtype=np.float32),
        "k": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        topk(
            args["items"],
            args["query"],
            args["k"],
            **{  # type: ignore[arg-type]
                key: value for key, value in args.items() if key in ("exclude", "backend")
            },
        )


def test_non_contiguous_query_is_accepted() -> None:
    items = normal((50, 8))
    wide = normal((8, 2), 3)
    query = wide[:, 0]
    assert not query.flags.c_contiguous
    np.testing.assert_array_equal(topk(items, query, 4)[0], topk(items, query.copy(), 4)[0])


def test_quantizing_in_blocks_equals_quantizing_each_row() -> None:
    """quantize_rows works QUANTIZE_ROWS rows at a time: the codes and scales of a catalog of
    several blocks (and a partial last one) equal those of its rows quantized one by one, and a
    NaN in a later block is still refused."""
    rows = int8.QUANTIZE_ROWS * 2 + 7
    x = normal((rows, 33), 5) * np.float32(10.0) ** np.arange(-3, 4)[np.arange(rows) % 7, None]
    x[3] = 0.0  # an all-zero row: scale 0, codes 0
    codes, scales = int8.quantize_rows(x.astype(np.float32))
    single = [int8.quantize_rows(x[i : i + 1].astype(np.float32)) for i in range(rows)]
    np.testing.assert_array_equal(codes, np.concatenate([c for c, _ in single]))
    np.testing.assert_array_equal(scales, np.concatenate([s for _, s in single]))
    assert codes.flags.c_contiguous
    assert codes.dtype == np.int8
    assert scales.dtype == np.float32
    x[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        int8.quantize_rows(x.astype(np.float32))


def test_int8_items_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="codes must be an int8 array"):
        Int8Items(codes=np.zeros((2, 2), np.int16), scales=np.ones(2, np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 rows of codes but 3 scales"):
        Int8Items(codes=np.zeros((2, 2), np.int8), scales=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantize_int8(np.array([[np.nan, 1.0]], dtype=np.float32))


def test_c_kernel_rejects_bad_arguments_with_a_typed_error() -> None:
    if "c" not in backends():
        pytest.skip("C extension not built")
    from pocketrec.native import c_backend

    with pytest.raises(KernelError, match="rejected its arguments"):
        c_backend.topk_f32(normal((4, 3)), normal((1, 3)), None, 0)
    rc = c_backend.lib.pr_topk_f32(
        c_backend.ffi.NULL, 0, 3, c_backend.ffi.NULL, 0, c_backend.ffi.NULL, 0, 1,
        c_backend.best_isa() + 1, c_backend.ffi.NULL, c_backend.ffi.NULL, c_backend.ffi.NULL,
    )  # fmt: skip
    assert rc == c_backend.lib.PR_E_ISA


# ---- threads, int8 quality -----------------------------------------------------------------


@by_name
def test_two_threads_at_once_get_correct_results(variant: Variant) -> None:
    catalogs = [normal((20000, 64), 10), normal((20000, 64), 11)]
    queries = [normal((8, 64), 12), normal((8, 64), 13)]
    expected = [reference_topk(c, q, 10) for c, q in zip(catalogs, queries, strict=True)]
    variant.topk(catalogs[0], queries[0], 10)  # compile (numba) before the race
    failures: list[str] = []
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            ids, _scores = variant.topk(catalogs[i], queries[i], 10)
            if not np.array_equal(ids, expected[i][0]):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_int8_recall_at_10_on_random_normal_data() -> None:
    items, queries = normal((20000, 64), 20), normal((200, 64), 21)
    exact_ids, _ = topk(items, queries, 10, backend="numpy")
    approx_ids, _ = topk(quantize_int8(items), queries, 10)
    overlap = [len(set(a) & set(b)) for a, b in zip(exact_ids, approx_ids, strict=True)]
    recall = float(np.mean(overlap)) / 10
    print(f"int8 recall@10 vs float32 on N(0,1) data, N=20000 D=64: {recall:.4f}")
    assert recall >= 0.95


# ---- backend choice and packaging ----------------------------------------------------------


def test_backends_lists_numpy_last_and_auto_picks_the_first() -> None:
    names = backends()
    assert names[-1] == "numpy"
    assert registry.resolve("auto") == names[0]


def test_missing_c_extension_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_c_import_error", lambda: "simulated: no compiler")
    monkeypatch.setattr(registry, "_warned", threading.Event())
    with pytest.warns(RuntimeWarning, match="C extension is not built .*simulated: no compiler"):
        assert registry.resolve("auto") == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.resolve("auto") == "numba"  # said once only
    with pytest.raises(BackendUnavailableError, match="backend 'c' is not available"):
        registry.resolve("c")


def test_without_c_and_numba_auto_uses_the_numpy_reference(tmp_path: Path) -> None:
    # A fresh interpreter where neither the C extension nor numba can be imported (a None entry in
    # sys.modules makes an import fail as a missing module would): the device install without a
    # compiler and without the numba extra.
    code = (
        "import sys, warnings\n"
        "sys.modules['numba'] = None\n"
        "sys.modules['pocketrec.native._ctopk'] = None\n"
        "import numpy as np\n"
        "from pocketrec.native import backends, registry, topk\n"
        "assert backends() == ['numpy'], backends()\n"
        "items = np.arange(12, dtype=np.float32).reshape(4, 3)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    ids, _ = topk(items, np.ones(3, np.float32), 2)\n"
        "    topk(items, np.ones(3, np.float32), 2)\n"
        "assert ids.tolist() == [3, 2], ids\n"
        "assert len(caught) == 1, [str(w.message) for w in caught]\n"
        "print(caught[0].message)\n"
        "try:\n"
        "    registry.resolve('numba')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=str(tmp_path), check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert out[0].startswith("pocketrec: the C extension is not built (")
    assert "using the numpy top-k backend" in out[0]
    assert "pip install 'pocketrec[numba]'" in out[0]
    assert out[1] == (
        "BackendUnavailableError backend 'numba' is not available: numba is not installed "
        "(pip install 'pocketrec[numba]' adds it)"
    )


def test_subpackages_do_not_install_top_level_modules(tmp_path: pytest.TempPathFactory) -> None:
    code = (
        "import importlib, pocketrec.native, pocketrec.core\n"
        "for name in ('core', 'native', 'runtime', 'converter', 'storage', 'server'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'top-level module {name!r} is importable')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), check=True)


def test_int8_dimension_limit_keeps_int32_sums_exact() -> None:
    from pocketrec.native.int8 import MAX_INT8_DIM

    too_wide = Int8Items(
        codes=np.zeros((1, MAX_INT8_DIM + 1), np.int8), scales=np.ones(1, np.float32)
    )
    with pytest.raises(ValueError, match="1 <= D <= 133144"):
        topk(too_wide, np.zeros(MAX_INT8_DIM + 1, np.float32), 1)
