"""The demo's models: train the interest model and convert it to bundles with the converter
(``pocketrec train`` + ``pocketrec convert``, parity gate included). Needs TensorFlow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketrec.core.dataset import Interactions
from pocketrec.core.progress import Progress

TINY_MODEL: dict[str, Any] = {
    "embedding_dim": 16,
    "hidden_dim": 32,
    "user_dim": 16,
    "learning_rate": 1e-2,
}
"""Model overrides for ``--fast`` (the defaults are ``ModelConfig``'s)."""


@dataclass(frozen=True)
class TrainedVersion:
    """One model version: its bundles by catalog dtype, parity, training time and epochs."""

    model_version: int
    bundles: dict[str, Path]
    parity: dict[str, float]
    train_seconds: float
    best_epoch: int
    sizes: dict[str, dict[str, int]]


def train_version(
    data: Interactions,
    work: Path,
    *,
    model_version: int,
    catalog_dtypes: tuple[str, ...],
    max_epochs: int,
    overrides: dict[str, Any],
    seed: int,
) -> TrainedVersion:
    """Train on ``data`` (leave-one-out, early stopping) into ``work/model`` and export one
    bundle per catalog dtype into ``work/bundle-<dtype>`` (float32 step model, parity gate)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pocketrec.converter import model_dir
    from pocketrec.converter.model import ModelConfig
    from pocketrec.converter.pipeline import export_bundle
    from pocketrec.converter.training import train
    from pocketrec.core.split import leave_one_out

    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items, max_epochs=max_epochs, seed=seed, **overrides)
    with Progress(f"training version {model_version}", total=max_epochs) as bar:
        model, report = train(
            split,
            config,
            show_progress=False,
            on_epoch=lambda row: bar.update(1, valid_ndcg10=row["valid_ndcg@10"]),
        )
    model_dir.save(work / "model", model, data, split, report)
    bundles: dict[str, Path] = {}
    sizes: dict[str, dict[str, int]] = {}
    parity: dict[str, float] = {}
    for dtype in catalog_dtypes:
        result = export_bundle(
            work / "model",
            work / f"bundle-{dtype}",
            catalog_dtype=dtype,
            model_version=model_version,
            evaluate_test=False,
        )
        bundles[dtype], sizes[dtype], parity = result.path, result.sizes, result.parity
    return TrainedVersion(
        model_version=model_version,
        bundles=bundles,
        parity=parity,
        train_seconds=report.seconds,
        best_epoch=report.best_epoch,
        sizes=sizes,
    )
