"""Latency of ``Recommender.observe()`` + ``recommend(k=10)`` on a 100k-item catalog (issue 4).

The bundle: the converter trains the default step model (``ModelConfig`` defaults: two LRU
blocks, D = 64, a state of S = 512 floats) for one epoch (sampled softmax) on a small synthetic
data set whose item ids are padded with synthetic ids up to N, so that the model's item table has
a row for every catalog item (``open_bundle`` steps the last item and refuses a catalog larger
than the model), and exports it; its catalog is then replaced by a random float32
``[100000, 65]`` catalog (standard normal / 8, the last column a small bias), or that catalog's
int8 quantization, and the manifest entries of the replaced files are recomputed with
``pocketrec.core.bundle.file_entry``, so the bundle verifies like any other. Only the trained ids
are observed; the latency does not depend on what the catalog holds, nor the step model's cost on
its vocabulary size (one row is gathered per event). The step model holds an N x 64 float32 item
table (25.6 MB for N = 100k), so the memory target counts the process's resident memory minus
the catalog and the step model file.

Measured in one process, with the same events for both catalogs (one user; clicks, views,
purchases, likes and 5% dismissals, so demotion and the masks are exercised):

- ``observe()`` + ``recommend(k=10)`` end to end, p50 / p99;
- the breakdown of the same calls: ``observe`` (one step-model call + state), the ranking's query
  and filters (user lock, demotion, exclusion mask), scoring (the top-k kernel), id lookup;
- ``observe()`` with a device store attached (``db=``: the event appended to the log and the
  user's state saved, one transaction per event), for durability ``"full"`` (one fsync per
  event) and ``"normal"``, next to the same ``observe()`` without a db, on the same bundle and
  events; the store file is a fresh one in ``--db-dir`` (default: the system's temporary folder;
  put it on the disk you care about, a tmpfs hides the fsync cost);
- the step model alone through its signature runner, and the raw interpreter path
  (``set_tensor`` x3 + ``invoke`` + ``get_tensor`` on a plain interpreter);
- ``import pocketrec.runtime`` time and the resident memory of a process serving each bundle
  (subprocesses).

Needs TensorFlow to build the bundle (``pip install -e '.[convert]'``); faiss (optional) adds a
reference row. Run from the repository root:

    python bench/bench_runtime.py [--events 3000] [--db-events 1000] [--items 100000]
        [--bundles DIR] [--db-dir DIR]

``--bundles DIR`` keeps the built bundles there and reuses them on the next run. Machines are
shared and noisy: compare percentiles over thousands of events, never single timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core import bundle as fmt
from pocketrec.core.idmap import IdMap
from pocketrec.native import quantize_int8
from pocketrec.runtime import Recommender
from pocketrec.runtime.interpreter import make_interpreter
from pocketrec.storage import Store
from pocketrec.storage.connection import Durability

D = 64  # ModelConfig's default user_dim (not imported here: it would load TensorFlow)
K = 10
WARM_UP = 300
EVENT_MIX = (("view", 0.3), ("click", 0.45), ("purchase", 0.1), ("like", 0.1), ("dismiss", 0.05))
TARGETS = {
    "p50_f32_ms": 0.8,
    "p99_f32_ms": 1.5,
    "p50_int8_ms": 0.4,
    "observe_over_raw": 3.0,
    "rss_extra_mb": 80.0,
    "import_s": 0.5,
}


# --------------------------------------------------------------------------- the bundles


def train_step_bundle(root: Path, seed: int, items: int) -> Path:
    """A small trained bundle of the default model (state ``S``, user vectors ``D + 1``) with
    ``items`` items: trained on about 150 of them, the others (``synthetic-*``) never seen."""
    from pocketrec.converter import model_dir
    from pocketrec.converter.model import ModelConfig
    from pocketrec.converter.pipeline import export_bundle
    from pocketrec.converter.training import train
    from pocketrec.core import leave_one_out, synthetic

    data = synthetic.generate(num_users=300, num_items=150, seed=seed)
    padding = [f"synthetic-{j:06d}" for j in range(data.num_items, items)]
    data = dataclasses.replace(data, items=IdMap([*data.items.ids, *padding]))
    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items, max_epochs=1)
    model, report = train(split, config, loss="sampled", show_progress=False)
    model_dir.save(root / "model", model, data, split, report)
    export_bundle(root / "model", root / "trained", model_version=1, evaluate_test=False)
    return root / "trained"


def with_catalog(
    src: Path, dst: Path, catalog: npt.NDArray[np.float32], ids: list[str], dtype: str
) -> Path:
    """A copy of the bundle ``src`` serving ``catalog`` (as ``dtype``) with item ids ``ids``;
    the manifest lists the new files with their lengths and SHA-256 (``file_entry``)."""
    shutil.copytree(src, dst)
    for name in (fmt.CATALOG, fmt.CATALOG_INT8_CODES, fmt.CATALOG_INT8_SCALES, fmt.ITEM_TITLES):
        (dst / name).unlink(missing_ok=True)
    if dtype == "int8":
        q = quantize_int8(catalog)
        np.save(dst / fmt.CATALOG_INT8_CODES, q.codes, allow_pickle=False)
        np.save(dst / fmt.CATALOG_INT8_SCALES, q.scales, allow_pickle=False)
    else:
        np.save(dst / fmt.CATALOG, catalog, allow_pickle=False)
    IdMap(ids).save(dst / fmt.ITEMS)
    files = {p.name: fmt.file_entry(p) for p in sorted(dst.iterdir()) if p.name != fmt.MANIFEST}
    manifest = dataclasses.replace(
        fmt.read_manifest(src), num_items=len(ids), catalog_dtype=dtype, files=files, metrics={}
    )
    (dst / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    fmt.verify_bundle(dst)
    return dst


def build_bundles(root: Path, items: int, seed: int) -> dict[str, Path]:
    """``{"float32": dir, "int8": dir}`` under ``root`` (reused when already there)."""
    out = {"float32": root / f"f32-{items}", "int8": root / f"int8-{items}"}
    if all((p / fmt.MANIFEST).is_file() for p in out.values()):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_step_bundle(Path(tmp), seed, items)
        ids = IdMap.load(trained / fmt.ITEMS).ids
        rng = np.random.default_rng(seed)
        catalog = rng.standard_normal((items, D + 1), dtype=np.float32) / np.float32(8)
        catalog[:, -1] = rng.normal(0.0, 0.05, items).astype(np.float32)
        for dtype, path in out.items():
            shutil.rmtree(path, ignore_errors=True)
            with_catalog(trained, path, catalog, ids, dtype)
    return out


# --------------------------------------------------------------------------- timing


def events(known: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` events over the ids the step model knows."""
    rng = np.random.default_rng(seed)
    names = [n for n, _ in EVENT_MIX]
    kinds = rng.choice(len(names), size=count, p=[p for _, p in EVENT_MIX])
    items = rng.integers(0, len(known), size=count)
    return [(known[i], names[e]) for i, e in zip(items.tolist(), kinds.tolist(), strict=True)]


def _ms(ns: list[int] | npt.NDArray[np.int64], q: float) -> float:
    return float(np.percentile(np.asarray(ns, dtype=np.float64), q)) / 1e6


def time_end_to_end(rec: Recommender, stream: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Per event: observe, recommend, and both (ns)."""
    clock = time.perf_counter_ns
    out: dict[str, list[int]] = {"observe": [], "recommend": [], "total": []}
    for n, (item, event) in enumerate(stream):
        t0 = clock()
        rec.observe(item, event, user="bench")
        t1 = clock()
        rec.recommend(K, user="bench")
        t2 = clock()
        if n >= WARM_UP:
            out["observe"].append(t1 - t0)
            out["recommend"].append(t2 - t1)
            out["total"].append(t2 - t0)
    return out


def time_breakdown(rec: Recommender, stream: list[tuple[str, str]]) -> dict[str, list[int]]:
    """The recommend path split at its seams (same calls as ``recommend``)."""
    clock = time.perf_counter_ns
    parts = ("observe", "query + filters", "scoring (top-k kernel)", "ids")
    out: dict[str, list[int]] = {p: [] for p in parts}
    for n, (item, event) in enumerate(stream):
        t0 = clock()
        rec.observe(item, event, user="breakdown")
        t1 = clock()
        ranking = rec.ranking(user="breakdown")
        t2 = clock()
        indices, _scores = ranking.top(K)
        t3 = clock()
        ranking.ids(indices)
        t4 = clock()
        if n >= WARM_UP:
            for part, ns in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                out[part].append(ns)
    return out


def time_observe_alone(rec: Recommender, stream: list[tuple[str, str]]) -> list[int]:
    """``observe`` back to back (no ranking in between: caches stay warm)."""
    return time_loop(lambda n: rec.observe(*stream[n], user="alone"), len(stream) - WARM_UP)


def time_loop(call: Callable[[int], Any], count: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for n in range(count + WARM_UP):
        t0 = clock()
        call(n)
        t1 = clock()
        if n >= WARM_UP:
            samples.append(t1 - t0)
    return samples


def time_observe_with_db(
    bundle_dir: Path, stream: list[tuple[str, str]], durability: Durability | None, db_dir: Path
) -> dict[str, list[int]]:
    """``observe`` back to back with a fresh store of ``durability`` attached (``None``: no db,
    the reference), then ``observe`` + ``recommend`` on the same recommender."""
    with tempfile.TemporaryDirectory(dir=db_dir) as tmp:
        store = None
        if durability is not None:
            store = Store.open(Path(tmp) / "device.sqlite", durability=durability)
        with Recommender.open(bundle_dir, db=store) as rec:
            count = len(stream) - WARM_UP
            alone = time_loop(lambda n: rec.observe(*stream[n], user="db"), count)
            e2e = time_end_to_end(rec, stream)
        if store is not None:
            assert store.load_state("db") is not None
            store.close()
    return {"observe": alone, "observe + recommend": e2e["total"]}


def time_interpreter(bundle_dir: Path, count: int) -> dict[str, list[int]]:
    """The step model through the signature runner, and the raw interpreter path."""
    rec = Recommender.open(bundle_dir)
    model = rec.ranking().served.step_model()
    state = np.zeros(model.state_dim, dtype=np.float32)
    runner_ns = time_loop(lambda n: model.step(n % 100, 1, state), count)

    content = (bundle_dir / fmt.STEP_MODEL).read_bytes()
    details = make_interpreter(content).get_signature_runner("step")
    inputs, outputs = details.get_input_details(), details.get_output_details()
    raw = make_interpreter(content)  # never given to a signature runner
    raw.allocate_tensors()
    item, event = np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32)
    state2 = np.zeros((1, model.state_dim), np.float32)
    i_item, i_event = inputs["item"]["index"], inputs["event"]["index"]
    i_state, o_user = inputs["state"]["index"], outputs["user"]["index"]

    def raw_step(n: int) -> Any:
        item[0, 0] = n % 100
        raw.set_tensor(i_item, item)
        raw.set_tensor(i_event, event)
        raw.set_tensor(i_state, state2)
        raw.invoke()
        return raw.get_tensor(o_user)

    return {"runner": runner_ns, "raw": time_loop(raw_step, count)}


def time_faiss(bundle_dir: Path, count: int) -> list[int] | None:
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    catalog = np.load(bundle_dir / fmt.CATALOG)
    index = faiss.IndexFlatIP(catalog.shape[1])
    index.add(catalog)
    queries = np.random.default_rng(1).standard_normal((64, catalog.shape[1]), dtype=np.float32)
    return time_loop(lambda n: index.search(queries[n % 64 : n % 64 + 1], K), count)


# --------------------------------------------------------------------------- subprocesses


def serve_and_measure_rss(bundle_dir: Path, count: int) -> dict[str, float]:
    """(In a child process) serve the bundle for ``count`` events; resident memory in MB."""

    def status(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    baseline = status("VmRSS")
    rec = Recommender.open(bundle_dir)
    known = [i for i in rec.ranking().served.item_ids if not i.startswith("synthetic-")]
    for item, event in events(known, count, seed=3):
        rec.observe(item, event)
        rec.recommend(K)
    return {"rss_mb": status("VmRSS"), "hwm_mb": status("VmHWM"), "imports_mb": baseline}


def child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def import_seconds(runs: int = 7) -> float:
    code = (
        "import time; t = time.perf_counter(); import pocketrec.runtime; "
        "print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(runs):
        run = subprocess.run(  # not from the work tree: its pocketrec/ would shadow the install
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
        )
        times.append(float(run.stdout))
    return statistics.median(times)


# --------------------------------------------------------------------------- report


DB_ROWS: tuple[tuple[Durability | None, str], ...] = (
    (None, "no db"),
    ("full", "db durability full"),
    ("normal", "db durability normal"),
)
"""The ``observe()`` rows with a device store: durability (``None``: no db) and label."""


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def pcts(samples: list[int], digits: int = 3) -> str:
    """``"p50 / p99"`` in ms."""
    return f"{_ms(samples, 50):.{digits}f} / {_ms(samples, 99):.{digits}f}"


def report(
    results: dict[str, dict[str, Any]],
    faiss_ns: list[int] | None,
    imports: float,
    items: int,
    count: int,
) -> str:
    """The two markdown tables: latencies per catalog, then the targets."""
    f32, i8 = results["float32"], results["int8"]
    info = f32["info"]
    head = (
        f"pocketrec runtime bench: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}; "
        f"interpreter {info['interpreter']}, top-k backend {info['backend']}; N = {items:,}, "
        f"D + 1 = {D + 1}, state {info['state_dim']} floats, k = {K}; {count:,} timed events per "
        f"catalog after {WARM_UP} warm-up, one user, 5% dismissals; db rows: "
        f"{len(f32['db']['full']['observe']):,} timed events each, a fresh store file in "
        f"{f32['db_dir']}"
    )
    lines: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("observe() + recommend(k=10)", lambda r: pcts(r["e2e"]["total"])),
        ("observe(), before each recommend", lambda r: pcts(r["e2e"]["observe"])),
        ("recommend(k=10)", lambda r: pcts(r["e2e"]["recommend"])),
        *[
            (f"  breakdown: {part}", lambda r, part=part: pcts(r["parts"][part]))
            for part in f32["parts"]
        ],
        ("observe() alone, back to back", lambda r: pcts(r["alone"], 4)),
        *[
            (f"observe() alone, {label}", lambda r, key=key: pcts(r["db"][key]["observe"], 4))
            for key, label in DB_ROWS
        ],
        *[
            (
                f"observe() + recommend(k=10), {label}",
                lambda r, key=key: pcts(r["db"][key]["observe + recommend"]),
            )
            for key, label in DB_ROWS
        ],
        (
            "  db logging + state save per event (p50 with - without), full / normal",
            lambda r: " / ".join(
                f"{_ms(r['db'][k]['observe'], 50) - _ms(r['db'][None]['observe'], 50):.3f}"
                for k in ("full", "normal")
            ),
        ),
        ("step model alone (StepModel.step)", lambda r: pcts(r["interp"]["runner"], 4)),
        (
            "raw interpreter: set_tensor x3 + invoke + get_tensor",
            lambda r: pcts(r["interp"]["raw"], 4),
        ),
        (
            "resident memory serving it, MB",
            lambda r: (
                f"{r['rss']['rss_mb']:.0f} (catalog {r['catalog_mb']:.1f}, step model "
                f"{r['model_mb']:.1f}, imports alone {r['rss']['imports_mb']:.0f})"
            ),
        ),
    ]
    rows = [[label, get(f32), get(i8)] for label, get in lines]
    if faiss_ns is not None:
        rows.append(["faiss IndexFlatIP search k=10, 1 thread (reference)", pcts(faiss_ns), "—"])
    latencies = table(["ms, p50 / p99", "float32 catalog", "int8 catalog"], rows)

    def p50(r: dict[str, Any], key: str) -> float:
        return _ms(r["e2e"][key], 50)

    raw_ratio = _ms(f32["alone"], 50) / _ms(f32["interp"]["raw"], 50)
    checks = [
        ("observe + recommend p50, float32", p50(f32, "total"), "p50_f32_ms", "ms"),
        ("observe + recommend p99, float32", _ms(f32["e2e"]["total"], 99), "p99_f32_ms", "ms"),
        ("observe + recommend p50, int8", p50(i8, "total"), "p50_int8_ms", "ms"),
        ("observe() alone / raw interpreter path, p50", raw_ratio, "observe_over_raw", "x"),
        *[
            (
                f"resident memory - catalog and step model bytes, {dtype}",
                r["rss"]["rss_mb"] - r["catalog_mb"] - r["model_mb"],
                "rss_extra_mb",
                "MB",
            )
            for dtype, r in results.items()
        ],
        ("import pocketrec.runtime, median of 7", imports, "import_s", "s"),
    ]
    target_rows = [
        [name, f"{got:.3f} {unit}", f"<= {TARGETS[key]:g} {unit}", verdict(got <= TARGETS[key])]
        for name, got, key, unit in checks
    ]
    targets = table(["target", "measured", "target", ""], target_rows)
    return f"{head}\n\n{latencies}\n\n{targets}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="timed events per catalog")
    parser.add_argument(
        "--db-events", type=int, default=1000, help="timed events per db setting and catalog"
    )
    parser.add_argument("--db-dir", type=Path, default=None, help="folder for the store files")
    parser.add_argument("--items", type=int, default=100_000, help="catalog size N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundles", type=Path, default=None, help="keep/reuse bundles here")
    parser.add_argument("--serve-rss", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_rss is not None:  # the child process of the memory measurement
        print(json.dumps(serve_and_measure_rss(args.serve_rss, 500)))
        return 0
    tmp = None
    if args.bundles is None:
        tmp = tempfile.TemporaryDirectory()
        args.bundles = Path(tmp.name)
    print(f"building the bundles (N = {args.items:,}, D = {D}) ...", file=sys.stderr)
    bundles = build_bundles(args.bundles, args.items, args.seed)

    db_dir = args.db_dir or Path(tempfile.gettempdir())
    results: dict[str, dict[str, Any]] = {}
    for dtype, path in bundles.items():
        rec = Recommender.open(path)
        known = [i for i in rec.ranking().served.item_ids if not i.startswith("synthetic-")]
        stream = events(known, args.events + WARM_UP, args.seed)
        files = fmt.read_manifest(path).files
        catalog_mb = sum(e.bytes for n, e in files.items() if n.startswith("catalog")) / 2**20
        results[dtype] = {
            "info": rec.info(),
            "e2e": time_end_to_end(rec, stream),
            "parts": time_breakdown(rec, stream),
            "alone": time_observe_alone(rec, stream),
            "interp": time_interpreter(path, args.events),
            "db": {
                key: time_observe_with_db(path, stream[: args.db_events + WARM_UP], key, db_dir)
                for key, _ in DB_ROWS
            },
            "rss": child(["--serve-rss", str(path)]),
            "catalog_mb": catalog_mb,
            "model_mb": files[fmt.STEP_MODEL].bytes / 2**20,
            "db_dir": db_dir,
        }
    faiss_ns = time_faiss(bundles["float32"], args.events)
    imports = import_seconds()

    print(report(results, faiss_ns, imports, args.items, args.events))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
