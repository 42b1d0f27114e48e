"""Training settings derived from the data's size (:func:`derive`): one rule for every dataset.

- **Window**: a training window holds the last ``max_len`` events of a history, doubled while
  windows of that length hold less than ``WINDOW_COVERAGE`` (90%) of the training positions, up
  to ``max_window``. Short histories keep ``max_len`` (Amazon Beauty: 97% of the positions are
  within 50 events; Video 94%); long ones get a longer window (ml-100k: 40% within 50, 62%
  within 100, 86% within 200: the cap), so a small dataset is not trained on a fraction of the
  data it has.
- **Batch size**: ``min(batch_size, max(MIN_BATCH, windows // min_batches))`` sequences (or
  that many times the mean window length in events, see ``batching``): a small dataset still gets
  about ``min_batches`` optimizer steps per epoch instead of a handful (ml-100k's 943 windows:
  32 sequences, 30 steps, where 256 gave 4). It changes nothing once the data has
  ``batch_size * min_batches`` windows (8,192 with the defaults; Amazon Beauty has 22,363).
- **Validation interval**: every ``max(1, min(valid_events // train_events, patience // 2))``
  epochs, where ``valid_events`` counts the events the validation pass reads (whole histories)
  and ``train_events`` the training positions of one epoch (windows of at most the window above):
  between two validation passes training reads at least as many events as validation does, once
  that is more than one epoch, and a stall is still seen by at least two passes before
  ``patience`` (which counts epochs) ends training. ml-100k (97,163 validation events against
  82,628 training positions per epoch in 200-event windows) and Amazon validate every epoch;
  histories much longer than the window validate less often.

- **History mask**: the items a position has already read (its window's inputs up to and
  including it, other than its target) are left out of its softmax when the mean training
  window holds at least ``history_mask_share`` (0.5%) of the catalog. Evaluation and
  ``recommend(exclude_seen=True)`` never rank those items; where a history is a sizeable part of
  the catalog (ml-100k: 87.6 events a window, 5.2% of 1,682 items) training them as negatives
  fights the data (they are what the user chose), and masking them gained validation NDCG@10;
  where it is a sliver (Amazon Beauty 0.05%, Video 0.03%), they are the few hard negatives
  close to the target, and masking them lost a little. The threshold sits between the two.

- **Refit**: after early stopping, training starts again for the best epoch count on windows that
  also hold each user's validation target, when those add at least ``refit_share`` (5%) of the
  refit's training positions. On short histories the validation targets are a large share of the
  data, and the most recent part of it (Amazon Beauty: 22,227 of the refit's 150,258
  positions, 14.8%; with every user's last event held out to score the refit on the validation
  targets alone, NDCG@10 0.0645 -> 0.0732); on long ones they are a sliver (ml-100k: 1,071 of
  83,699, 1.3%: a full 200-event window only moves by one event), and the refit, at ~1.5x the
  training time, moved NDCG@10 by +0.0011 and -0.0004 on two seeds.

``max_window <= max_len`` keeps ``max_len``; ``min_batches = 0`` keeps ``batch_size`` as given;
``valid_every > 0`` fixes the interval; ``refit_share = 0`` always refits, ``>= 1`` never.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pocketrec.converter.config import ModelConfig

MIN_BATCH = 32  # fewest sequences per batch the rule goes down to
WINDOW_COVERAGE = 0.9  # share of the training positions the window should hold


def window(config: ModelConfig, lengths: npt.NDArray[np.integer]) -> int:
    """Events per training window for training histories of ``lengths`` events (one per user):
    ``max_len``, doubled while it holds less than ``WINDOW_COVERAGE`` of the positions (a
    history of ``L`` events has ``L - 1``), at most ``max_window``."""
    positions = np.maximum(np.asarray(lengths, np.int64) - 1, 0)
    total = int(positions.sum())
    size = config.max_len
    while size * 2 <= config.max_window and np.minimum(positions, size).sum() < (
        WINDOW_COVERAGE * total
    ):
        size *= 2
    return size


@dataclass(frozen=True)
class Schedule:
    """The settings training runs with: ``batch_size`` (sequences, or the events budget's
    multiplier), ``valid_every`` (epochs between validation passes, >= 1) and
    ``mask_history`` (whether the softmax leaves out the items a position has read) and
    ``refit`` (whether training starts again, after early stopping, on the validation targets
    too)."""

    batch_size: int
    valid_every: int
    mask_history: bool = False
    refit: bool = False


def derive(
    config: ModelConfig, windows: int, train_events: int, valid_events: int, refit_events: int = 0
) -> Schedule:
    """The schedule for ``windows`` training sequences holding ``train_events`` training
    positions per epoch, validated on histories of ``valid_events`` events in all;
    ``refit_events``: the training positions of the refit's windows (0: none to refit on)."""
    if windows < 1 or train_events < 1:
        raise ValueError(f"need training data, got {windows} windows, {train_events} events")
    batch = config.batch_size
    if config.min_batches > 0:
        batch = min(batch, max(MIN_BATCH, windows // config.min_batches))
    every = config.valid_every or max(1, min(valid_events // train_events, config.patience // 2))
    mask = train_events / windows >= config.history_mask_share * config.num_items
    added = refit_events - train_events
    refit = added > 0 and added >= config.refit_share * refit_events
    return Schedule(batch_size=batch, valid_every=every, mask_history=bool(mask), refit=refit)
