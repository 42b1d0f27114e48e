"""Time to open a bundle: ``open_bundle`` end to end, and what each part of its proof costs.

Bundles: the committed fixture (``tests/fixtures/bundle_v1``: a GRU step model, 24 items) and
the 100k-item bundles of ``bench/bench_runtime.py`` (the default LRU step model whose item table
covers every catalog row; float32 and int8 catalogs), built once with TensorFlow and reused with
``--bundles DIR``. Each bundle is opened ``--runs`` times in this process, so its files are in
the page cache (as they are right after a download); the script prints medians in ms:

- ``open_bundle`` end to end;
- its parts, timed separately the same way: ``verify_bundle`` (manifest, lengths, SHA-256 of
  every file), ``check_model`` (the flatbuffer and graph check), the built-in-kernel run
  (``StepModel`` minus ``StepModel(checked=True)``), the serving interpreters
  (``StepModel(checked=True)``: what a thread's ``clone`` costs), loading and checking the
  catalog (one pass for NaN/infinity), the ids and titles, and the exercise (two events and one
  top-k).

``--total-only`` prints ``open_bundle`` alone, which also runs on builds without the proof (to
compare before and after). Run from the repository root:

    python bench/bench_open.py [--runs 15] [--bundles DIR] [--items 100000] [--total-only]

Machines are shared and noisy: compare medians, never single timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pocketrec.runtime.bundle import open_bundle

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bundle_v1"


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """Median wall time of ``call()`` in ms over ``runs`` calls, after one warm-up call."""
    call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def parts(root: Path, runs: int) -> dict[str, float]:
    """Median ms of each part of ``open_bundle`` on ``root`` (module docstring)."""
    from pocketrec.core import bundle as fmt
    from pocketrec.runtime import bundle as opening
    from pocketrec.runtime.model_check import check_model
    from pocketrec.runtime.step import StepModel

    manifest = fmt.verify_bundle(root)
    content = (root / fmt.STEP_MODEL).read_bytes()
    loaded = open_bundle(root)
    step = median_ms(lambda: StepModel(content), runs)
    serving = median_ms(lambda: StepModel(content, checked=True), runs)
    checking = median_ms(lambda: check_model(content), runs)
    return {
        "open_bundle": median_ms(lambda: open_bundle(root), runs),
        "verify_bundle (SHA-256)": median_ms(lambda: fmt.verify_bundle(root), runs),
        "check_model": checking,
        "built-in kernels run": step - serving - checking,
        "serving interpreters": serving,
        "catalog load + finite": median_ms(lambda: opening._load_catalog(root, manifest), runs),
        "ids + titles": median_ms(
            lambda: (opening._load_items(root, manifest), opening._load_titles(root, manifest)),
            runs,
        ),
        "exercise (2 events + top-k)": median_ms(lambda: opening._exercise(loaded), runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed opens per bundle")
    parser.add_argument("--bundles", type=Path, default=None, help="keep/reuse bundles here")
    parser.add_argument("--items", type=int, default=100_000, help="catalog size N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-only", action="store_true", help="open_bundle alone")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtime import build_bundles

    tmp = None
    if args.bundles is None:
        tmp = tempfile.TemporaryDirectory()
        args.bundles = Path(tmp.name)
    print(f"building the bundles (N = {args.items:,}) ...", file=sys.stderr)
    bundles = {"fixture (24 items)": FIXTURE}
    for dtype, path in build_bundles(args.bundles, args.items, args.seed).items():
        bundles[f"{args.items:,} items, {dtype} catalog"] = path
    rows = {}
    for name, path in bundles.items():
        if args.total_only:
            rows[name] = {"open_bundle": median_ms(lambda path=path: open_bundle(path), args.runs)}
        else:
            rows[name] = parts(path, args.runs)
    columns = list(next(iter(rows.values())))
    print(f"median ms of {args.runs} runs, files in the page cache")
    print("| part | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for column in columns:
        print(f"| {column} | " + " | ".join(f"{row[column]:.2f}" for row in rows.values()) + " |")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
