"""Training batches: every window exactly once per epoch, grouped by length, sized by windows or
by events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

from pocketrec.converter import schedule
from pocketrec.converter.config import ModelConfig
from pocketrec.converter.training import length_batches, planned
from pocketrec.core.heldout import HeldOut
from pocketrec.core.loaders import load
from pocketrec.core.split import leave_one_out

LENGTHS = st.lists(st.integers(1, 50), min_size=1, max_size=400).map(
    lambda v: np.array(v, dtype=np.int64)
)


@settings(max_examples=60, deadline=None)
@given(lengths=LENGTHS, batch=st.integers(1, 64), by_events=st.booleans(), seed=st.integers(0, 9))
def test_every_window_once_per_epoch(
    lengths: np.ndarray, batch: int, by_events: bool, seed: int
) -> None:
    batches = length_batches(lengths, batch, np.random.default_rng(seed), by_events=by_events)
    rows = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(lengths)))
    assert all(len(b) > 0 for b in batches)
    if not by_events:
        assert all(len(b) <= batch for b in batches)


@settings(max_examples=60, deadline=None)
@given(lengths=LENGTHS, batch=st.integers(1, 64), seed=st.integers(0, 9))
def test_event_batches_hold_about_the_same_number_of_events(
    lengths: np.ndarray, batch: int, seed: int
) -> None:
    batches = length_batches(lengths, batch, np.random.default_rng(seed), by_events=True)
    budget = batch * lengths.mean()
    sizes = [int(lengths[b].sum()) for b in batches]
    # A batch closes once it reaches the budget: it overshoots by less than one window.
    assert all(size < budget + lengths.max() for size in sizes)
    assert len(batches) <= np.ceil(lengths.sum() / budget - 1e-9)


def test_event_batches_hold_more_short_windows_than_long_ones() -> None:
    lengths = np.array([2] * 600 + [40] * 30, dtype=np.int64)
    batches = length_batches(lengths, 30, np.random.default_rng(0), by_events=True)
    short = [len(b) for b in batches if lengths[b].max() == 2]
    long = [len(b) for b in batches if lengths[b].min() == 40]
    assert min(short) > 5 * max(long)
    sizes = [len(b) for b in length_batches(lengths, 30, np.random.default_rng(0))]
    assert max(sizes) == 30


@pytest.mark.parametrize(
    ("name", "window", "expected"),
    [
        # Amazon: what the defaults trained with before the rules (windows of 50 events,
        # 256 sequences, every epoch): 97% / 94% of their training positions are within 50.
        # Their validation targets add 14.8% / 14.4% to the refit's positions (22,227 of
        # 150,258; 30,619 of 212,861): refit; ml-100k's 1.3% (1,071 of 83,699): not.
        ("amazon-beauty", 50, schedule.Schedule(batch_size=256, valid_every=1, refit=True)),
        ("amazon-video", 50, schedule.Schedule(batch_size=256, valid_every=1, refit=True)),
        # 943 histories: 40% of the positions within 50 events, 62% within 100, 86% within
        # 200 (the cap): 82,628 positions an epoch against 97,163 validation events.
        # Its mean window (87.6 positions) is 5.2% of the 1,682 items: the history is masked;
        # Amazon's (5.7 and 6.0) are 0.05% and 0.03% of theirs: not.
        ("ml-100k", 200, schedule.Schedule(batch_size=32, valid_every=1, mask_history=True)),
    ],
)
def test_the_defaults_on_the_shared_datasets(
    shared_data: Path, name: str, window: int, expected: schedule.Schedule
) -> None:
    data, _ = load(shared_data / name)
    split = leave_one_out(data)
    config = ModelConfig(num_items=data.num_items)
    valid = HeldOut.from_split(split).stage("valid")
    got_window, windows, refit, plan = planned(split, config, valid)
    assert (got_window, plan) == (window, expected)
    assert windows.lengths.max() == refit.lengths.max() == window
    assert refit.lengths.sum() > windows.lengths.sum()
