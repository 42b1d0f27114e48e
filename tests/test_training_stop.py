"""Early stopping with ``min_delta`` (gains too small to matter do not keep training going) and
every ``valid_every`` epochs (``converter/schedule.py``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the `convert` extra")

from pocketrec.converter import schedule
from pocketrec.converter.model import ModelConfig
from pocketrec.converter.training import train
from pocketrec.core import synthetic
from pocketrec.core.split import leave_one_out

SMALL_DIMS = {"embedding_dim": 8, "hidden_dim": 8, "user_dim": 8}
SMALL = {**SMALL_DIMS, "max_epochs": 10, "patience": 2}


def test_min_delta_stops_after_patience_epochs_without_a_big_enough_gain() -> None:
    data = synthetic.generate(num_users=200, num_items=40, seed=6)
    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items, **SMALL)
    # NDCG@10 is at most 1: only the first epoch beats the start (-1) by more than 1.0.
    _model, report = train(split, config, show_progress=False, min_delta=1.0)
    assert report.stopped_early
    assert len(report.epochs) == 1 + SMALL["patience"]
    scores = [row["valid_ndcg@10"] for row in report.epochs]
    assert report.best_epoch == 1 + int(np.argmax(scores))  # the best is kept, gain or not
    with pytest.raises(ValueError, match="min_delta must be >= 0"):
        train(split, config, show_progress=False, min_delta=-0.01)


def test_training_validates_every_valid_every_epochs_and_after_the_last() -> None:
    split = leave_one_out(synthetic.generate(num_users=120, num_items=30, seed=3))
    config = ModelConfig(num_items=30, **SMALL_DIMS, max_epochs=7, patience=100, valid_every=3)
    _model, report = train(split, config, show_progress=False)
    assert [int(row["epoch"]) for row in report.epochs] == [3, 6, 7]
    assert (report.epochs_run, report.valid_every) == (7, 3)
    assert report.best_epoch in (3, 6, 7)
    # 120 windows < 256 * 32: the batch shrinks to the rule's floor, several batches an epoch.
    assert report.batch_size == schedule.MIN_BATCH
    assert report.batches_per_epoch > 1


def test_patience_counts_epochs_between_validations() -> None:
    split = leave_one_out(synthetic.generate(num_users=120, num_items=30, seed=3))
    config = ModelConfig(num_items=30, **SMALL_DIMS, max_epochs=20, patience=4, valid_every=2)
    # min_delta 1.0: only the first validation (epoch 2) restarts the count; 4 epochs later
    # (two validations without a gain) training stops.
    _model, report = train(split, config, show_progress=False, min_delta=1.0)
    assert report.stopped_early
    assert [int(row["epoch"]) for row in report.epochs] == [2, 4, 6]
    assert report.epochs_run == 6
