"""Early stopping with ``min_delta``: gains too small to matter do not keep training going."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the `convert` extra")

from pocketrec.converter.model import ModelConfig
from pocketrec.converter.training import train
from pocketrec.core import synthetic
from pocketrec.core.split import leave_one_out

SMALL = {"embedding_dim": 8, "hidden_dim": 8, "user_dim": 8, "max_epochs": 10, "patience": 2}


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
