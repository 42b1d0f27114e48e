"""The refit (``ModelConfig.refit_share``, ``schedule.py``): after early stopping, training again
for the best epoch count on the training events plus each user's validation target, never its
test target."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the `convert` extra")

from pocketrec.converter.model import ModelConfig
from pocketrec.converter.training import train, training_windows
from pocketrec.core import synthetic
from pocketrec.core.dataset import Interactions
from pocketrec.core.split import Split, leave_one_out

SMALL = {"embedding_dim": 8, "hidden_dim": 8, "user_dim": 8, "max_epochs": 3, "patience": 2}


def _rows(split: Split) -> list[int]:
    """Kept users with at least two training events: the rows of ``training_windows``."""
    return [k for k in range(split.num_users) if len(split.history(k, "valid")[0]) >= 2]


def test_refit_windows_hold_everything_before_the_test_target() -> None:
    split = leave_one_out(synthetic.generate(num_users=80, num_items=40, seed=5))
    base, full = training_windows(split, 1000), training_windows(split, 1000, until="test")
    assert len(full.lengths) >= len(base.lengths)
    for r, k in enumerate(_rows(split)):
        t = int(full.lengths[r])
        items, events = split.history(k, "test")
        # Inputs are the history before the test target but its last event, targets all of it
        # but its first: the validation target is a target, the test target never appears.
        assert t == len(items) - 1 == int(split.test_pos[k]) - 1
        np.testing.assert_array_equal(full.items[r, :t], items[:-1])
        np.testing.assert_array_equal(full.targets[r, :t], items[1:])
        np.testing.assert_array_equal(full.events[r, :t], events[:-1])
        assert split.target(k, "valid") in full.targets[r, :t]
        assert t > int(base.lengths[r])


def _other_test_targets(data: Interactions, split: Split) -> Interactions:
    """``data`` with every kept user's test target replaced by another item."""
    sequences = [s.copy() for s in data.sequences]
    for k, u in enumerate(split.users.tolist()):
        p = int(split.test_pos[k])
        sequences[u][p] = (sequences[u][p] + 1) % data.num_items
    return dataclasses.replace(data, sequences=sequences)


def _weights(model: object) -> list[np.ndarray]:
    return [v.numpy() for v in model.sequence_model.weights]  # type: ignore[attr-defined]


def test_refit_trains_the_best_epoch_count_again_without_reading_test_targets() -> None:
    data = synthetic.generate(num_users=80, num_items=40, seed=5)
    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items, **SMALL, refit_share=0.0)  # always
    refit, report = train(split, config, show_progress=False)
    assert report.best_epoch >= 1
    assert report.refit_epochs == report.best_epoch
    assert 0 < report.refit_seconds < report.seconds
    # The same run with other test targets ends with the same weights: they were never read.
    changed = leave_one_out(_other_test_targets(data, split))
    np.testing.assert_array_equal(changed.test_pos, split.test_pos)
    again, _ = train(changed, config, show_progress=False)
    for mine, theirs in zip(_weights(refit), _weights(again), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    # Without the refit the kept model is the early-stopped one: other weights.
    never = dataclasses.replace(config, refit_share=1.0)
    plain, plain_report = train(split, never, show_progress=False)
    assert plain_report.refit_epochs == 0
    assert plain_report.best_epoch == report.best_epoch  # the refit does not change the search
    gaps = [np.abs(a - b).max() for a, b in zip(_weights(refit), _weights(plain), strict=True)]
    assert max(gaps) > 1e-3
