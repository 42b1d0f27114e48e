"""Accuracy of the exported bundle with the default model, next to the reference numbers.

For each dataset: ``pocketrec train`` defaults (leave-one-out split, early stopping on validation
NDCG@10), export to a bundle with a float32 and with an int8 catalog, and the *test* metrics of
each bundle as the device runs it (TFLite replay + the catalog as the kernel ranks it; history
excluded, full ranking). Prints a markdown table with the training wall time.

    python bench/bench_accuracy.py [--data ../shared/data/amazon-beauty ...] [--out DIR]

Peer, run in the same process: SASRec (``pocketrec.converter.sasrec``, a causal transformer that
re-reads the history per call) trained by the same loop, split and defaults, evaluated in Keras on
the same test users; the last line per dataset gives the bundle's ratio to it (``--no-peers``
skips it). Reference rows (published S3-Rec table; RecBole runs measured on this machine) come
from ``../shared/data/README.md`` and are printed for Amazon Beauty only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pocketrec.converter import model_dir
from pocketrec.converter.model import ModelConfig
from pocketrec.converter.pipeline import export_bundle
from pocketrec.converter.sasrec import SASRec
from pocketrec.converter.training import evaluate_model, fit, train
from pocketrec.core import leave_one_out, load
from pocketrec.core.heldout import HeldOut
from pocketrec.core.metrics import popularity_baseline

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COLUMNS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")
# From ../shared/data/README.md (Amazon Beauty, same protocol), for comparison only.
BEAUTY_REFERENCE = {
    "GRU4Rec, published (S3-Rec paper)": (0.0164, 0.0283, 0.0479, 0.0099, 0.0137, 0.0187),
    "SASRec, published (S3-Rec paper)": (0.0387, 0.0605, 0.0902, 0.0249, 0.0318, 0.0394),
    "GRU4Rec, RecBole, measured here": (0.0458, 0.0699, 0.0994, 0.0315, 0.0393, 0.0467),
    "SASRec, RecBole, measured here": (0.0629, 0.0869, 0.1216, 0.0444, 0.0521, 0.0608),
}


def _row(name: str, values: tuple[float, ...], extra: str = "") -> str:
    return f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {extra} |"


def run(data_path: Path, out: Path, *, peers: bool = True) -> list[str]:
    """Train, export and evaluate one dataset; returns its table rows."""
    data, _report = load(data_path)
    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items)
    model, report = train(split, config)
    model_path = out / f"{data_path.name}-model"
    model_dir.save(model_path, model, data, split, report)
    rows = [f"| **{data_path.name}** ({data.num_users:,} users, {data.num_items:,} items) |||||||"]
    pop = popularity_baseline(split, stage="test")
    rows.append(_row("popularity", tuple(pop[c] for c in COLUMNS)))
    if data_path.name == "amazon-beauty":
        rows += [_row(name, values) for name, values in BEAUTY_REFERENCE.items()]
    for catalog_dtype in ("float32", "int8"):
        result = export_bundle(
            model_path, out / f"{data_path.name}-{catalog_dtype}", catalog_dtype=catalog_dtype,
            overwrite=True,
        )  # fmt: skip
        test = result.manifest.metrics["test"]
        rows.append(
            _row(
                f"pocketrec bundle, {catalog_dtype} catalog",
                tuple(test[c] for c in COLUMNS),
                f"{report.seconds:.0f} s, best epoch {report.best_epoch}, valid NDCG@10 "
                f"{report.best_valid['ndcg@10']:.4f}",
            )
        )
    if peers:
        bundle = result.manifest.metrics["test"]  # the int8 catalog's row above
        sasrec, peer_report = fit(SASRec(config), split)
        peer = evaluate_model(sasrec, HeldOut.from_split(split).stage("test"))
        rows.append(
            _row(
                "SASRec, same loop and defaults (peer, Keras)",
                tuple(peer[c] for c in COLUMNS),
                f"{peer_report.seconds:.0f} s, best epoch {peer_report.best_epoch}, valid "
                f"NDCG@10 {peer_report.best_valid['ndcg@10']:.4f}",
            )
        )
        rows.append(
            _row(
                "ratio: bundle (int8 catalog) / SASRec", tuple(bundle[c] / peer[c] for c in COLUMNS)
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[DATA / "amazon-beauty", DATA / "amazon-video"],
        help="dataset files or folders (default: Amazon Beauty and Amazon Video)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where models and bundles go")
    parser.add_argument("--no-peers", action="store_true", help="skip the SASRec peer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        lines = ["| model | " + " | ".join(COLUMNS) + " | training, 2 cores |"]
        lines.append("|---" * (len(COLUMNS) + 2) + "|")
        for path in args.data:
            lines += run(path, out, peers=not args.no_peers)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
