"""Settings derived from the data's size (``converter/schedule.py``): the rules (no TensorFlow;
what they give on the shared datasets is in ``test_training_batches.py``, the training loop
following them in ``test_training_stop.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.converter import schedule
from pocketrec.converter.config import ModelConfig


@settings(max_examples=200, deadline=None)
@given(
    windows=st.integers(1, 100_000),
    per_window=st.integers(1, 50),
    valid_ratio=st.floats(0.1, 30.0),
    batch=st.integers(1, 512),
    min_batches=st.integers(0, 64),
    patience=st.integers(1, 30),
)
def test_the_rules(
    windows: int, per_window: int, valid_ratio: float, batch: int, min_batches: int, patience: int
) -> None:
    train_events = windows * per_window
    valid_events = int(train_events * valid_ratio)
    config = ModelConfig(num_items=10, batch_size=batch, min_batches=min_batches, patience=patience)
    plan = schedule.derive(config, windows, train_events, valid_events)
    # The batch only shrinks, never below MIN_BATCH (unless batch_size is smaller), and only
    # when the data has fewer than batch_size * min_batches windows.
    assert min(batch, schedule.MIN_BATCH) <= plan.batch_size <= batch
    if min_batches == 0 or windows >= batch * min_batches:
        assert plan.batch_size == batch
    elif plan.batch_size > schedule.MIN_BATCH:
        assert windows // plan.batch_size >= min_batches
    # Validation every E epochs: E epochs of training read no more events than one validation
    # pass, E + 1 epochs more (E = 1 when validation reads less than two epochs' events), unless
    # that would leave fewer than two passes within the patience.
    assert plan.valid_every >= 1
    if plan.valid_every > 1:
        assert plan.valid_every * train_events <= valid_events
        assert 2 * plan.valid_every <= patience
    if 2 * (plan.valid_every + 1) <= patience:
        assert (plan.valid_every + 1) * train_events > valid_events
    fixed = ModelConfig(num_items=10, valid_every=3)
    assert schedule.derive(fixed, windows, train_events, valid_events).valid_every == 3


@settings(max_examples=200, deadline=None)
@given(
    windows=st.integers(1, 100_000),
    per_window=st.integers(1, 500),
    num_items=st.integers(1, 10_000_000),
    share=st.sampled_from([0.0, 0.001, 0.005, 0.05, 1.0, 3.0]),
)
def test_the_history_mask_rule(windows: int, per_window: int, num_items: int, share: float) -> None:
    config = ModelConfig(num_items=num_items, history_mask_share=share)
    plan = schedule.derive(config, windows, windows * per_window, 1)
    # Masked exactly when the mean window holds at least `share` of the catalog: always at 0,
    # never from 1 on unless every window holds the whole catalog or more.
    assert plan.mask_history == (per_window >= share * num_items)
    if share == 0:
        assert plan.mask_history
    if share >= 1 and per_window < num_items:
        assert not plan.mask_history


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 2_000), min_size=1, max_size=300),
    max_len=st.integers(1, 100),
    max_window=st.integers(0, 1_000),
)
def test_the_window_rule(lengths: list[int], max_len: int, max_window: int) -> None:
    config = ModelConfig(num_items=10, max_len=max_len, max_window=max_window)
    size = schedule.window(config, np.array(lengths))
    positions = np.maximum(np.array(lengths) - 1, 0)

    def held(w: int) -> int:
        return int(np.minimum(positions, w).sum())

    # max_len doubled k >= 0 times, never past max_window (unless that is max_len itself) ...
    doublings = size // max_len
    assert size == max_len * doublings
    assert doublings & (doublings - 1) == 0
    assert size == max_len or size <= max_window
    # ... and only while the window held less than 90% of the positions.
    if size > max_len:
        assert held(size // 2) < schedule.WINDOW_COVERAGE * positions.sum()
    if size * 2 <= max_window:
        assert held(size) >= schedule.WINDOW_COVERAGE * positions.sum()


@settings(max_examples=200, deadline=None)
@given(
    train_events=st.integers(1, 1_000_000),
    added=st.integers(-1_000, 100_000),
    share=st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0, 3.0]),
)
def test_the_refit_rule(train_events: int, added: int, share: float) -> None:
    config = ModelConfig(num_items=100, refit_share=share)
    refit_events = max(train_events + added, 0)
    plan = schedule.derive(config, 10, train_events, 10, refit_events=refit_events)
    gained = refit_events - train_events
    # A refit only when the validation targets add positions: always at share 0, never at 1
    # and above (what they add is less than the refit's whole), else from a share of the whole.
    assert plan.refit == (gained > 0 and gained >= share * refit_events)
    if gained <= 0 or share >= 1:
        assert not plan.refit
    elif share == 0:
        assert plan.refit
    assert not schedule.derive(config, 10, train_events, 10).refit  # nothing to refit on


def test_the_rules_reject_what_they_cannot_use() -> None:
    with pytest.raises(ValueError, match="need training data"):
        schedule.derive(ModelConfig(num_items=10), 0, 0, 5)
    with pytest.raises(ValueError, match="min_batches and valid_every must be >= 0"):
        ModelConfig(num_items=10, valid_every=-1)
    with pytest.raises(ValueError, match="min_batches and valid_every must be >= 0"):
        ModelConfig(num_items=10, min_batches=-2)
    with pytest.raises(ValueError, match="history_mask_share must be >= 0"):
        ModelConfig(num_items=10, history_mask_share=-0.1)
    with pytest.raises(ValueError, match="refit_share must be >= 0"):
        ModelConfig(num_items=10, refit_share=-0.5)


def test_configs_written_before_the_rules_train_as_then() -> None:
    text = ModelConfig(num_items=10).to_json()
    old = (
        text.replace('"min_batches": 32,', "")
        .replace('"valid_every": 0,', "")
        .replace('"max_window": 200,', "")
        .replace('"history_mask_share": 0.005,', "")
        .replace('"refit_share": 0.05,', "")
    )
    assert "min_batches" not in old
    assert "valid_every" not in old
    assert "max_window" not in old
    assert "history_mask_share" not in old
    assert "refit_share" not in old
    config = ModelConfig.from_json(old)
    assert (config.min_batches, config.valid_every, config.max_window) == (0, 1, 0)
    assert config.history_mask_share == 1.0  # never masked then
    assert config.refit_share == 1.0  # nor refit
    assert schedule.window(config, np.array([1_000, 1_000])) == config.max_len
