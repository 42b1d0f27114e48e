"""The demo's models: train the interest model and convert it to bundles with the converter
(``pocketrec train`` + ``pocketrec convert``, parity gate included). Needs TensorFlow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketrec.core.dataset import Interactions
from pocketrec.core.progress import Progress

DEMO_TRAINING: dict[str, Any] = {
    "batch_size": 64,
    "min_batches": 0,  # the batch size above, as set by hand (not schedule.py's rule)
    "ema": 0.99,
    "plateau_decay": 0.5,
    "patience": 3,
    "refit_share": 1.0,  # no refit (see below)
}
"""Training overrides for the demo's small data (``ModelConfig``'s defaults suit larger data).

With the defaults (batches of 256 sequences' worth of events, ``ema=0.998``, no decay, patience
10, no ``min_delta``) the demo's few thousand users give ~12 optimizer steps an epoch; the
averaged weights' validation score crept up by a little every epoch and both versions ran to the
60-epoch cap. Here batches are 4x smaller, the learning rate halves after every epoch without a
gain of more than :data:`MIN_DELTA`, and three such epochs in a row stop training (the best
epoch's weights are kept), well before :data:`MAX_EPOCHS`. No refit on the validation targets:
they are 5.8% of the demo's positions, just above ``schedule.py``'s 5%, and the refit would
nearly double each version's training time for the demo's held-out users, whom no version
trains on."""
MIN_DELTA = 0.005
"""Validation NDCG@10 gain that counts as progress (``converter.training.fit``): smaller ones are
below the noise of a few hundred validation users."""
MAX_EPOCHS = 40
"""A cap that early stopping reaches first (figures in README, ``pocketrec demo``)."""
TINY_MODEL: dict[str, Any] = {
    "embedding_dim": 16,
    "hidden_dim": 32,
    "user_dim": 16,
    "learning_rate": 1e-2,
}
"""Model overrides for ``--fast`` (the other defaults are ``ModelConfig``'s)."""


@dataclass(frozen=True)
class TrainedVersion:
    """One model version: its bundles by catalog dtype, parity, training time (s), the epochs
    run, the best one (whose weights are kept) and whether early stopping ended training."""

    model_version: int
    bundles: dict[str, Path]
    parity: dict[str, float]
    train_seconds: float
    best_epoch: int
    epochs: int
    stopped_early: bool
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
            on_epoch=lambda row: bar.update(
                int(row["epoch"]) - bar.done, valid_ndcg10=row["valid_ndcg@10"]
            ),
            min_delta=MIN_DELTA,
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
        epochs=report.epochs_run,
        stopped_early=report.stopped_early,
        sizes=sizes,
    )
