"""Training settings derived from the data's size (:func:`derive`): one rule for every dataset.

- **Batch size**: ``min(batch_size, max(MIN_BATCH, windows // min_batches))`` sequences (or
  that many times the mean window length in events, see ``batching``): a small dataset still gets
  about ``min_batches`` optimizer steps per epoch instead of a handful (ml-100k's 943 windows:
  32 sequences, 30 steps, where 256 gave 4). It changes nothing once the data has
  ``batch_size * min_batches`` windows (8,192 with the defaults; Amazon Beauty has 22,363).
- **Validation interval**: every ``max(1, min(valid_events // train_events, patience // 2))``
  epochs, where ``valid_events`` counts the events the validation pass reads (whole histories)
  and ``train_events`` the training positions of one epoch (windows of at most ``max_len``):
  between two validation passes training reads at least as many events as validation does, once
  that is more than one epoch, and a stall is still seen by at least two passes before
  ``patience`` (which counts epochs) ends training. Long histories (ml-100k: 97,163 validation
  events against 38,469 training positions per epoch) validate every 2 epochs; short ones
  (Amazon Beauty) every epoch.

``min_batches = 0`` keeps ``batch_size`` as given; ``valid_every > 0`` fixes the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from pocketrec.converter.config import ModelConfig

MIN_BATCH = 32  # fewest sequences per batch the rule goes down to


@dataclass(frozen=True)
class Schedule:
    """The settings training runs with: ``batch_size`` (sequences, or the events budget's
    multiplier) and ``valid_every`` (epochs between validation passes, >= 1)."""

    batch_size: int
    valid_every: int


def derive(config: ModelConfig, windows: int, train_events: int, valid_events: int) -> Schedule:
    """The schedule for ``windows`` training sequences holding ``train_events`` training
    positions per epoch, validated on histories of ``valid_events`` events in all."""
    if windows < 1 or train_events < 1:
        raise ValueError(f"need training data, got {windows} windows, {train_events} events")
    batch = config.batch_size
    if config.min_batches > 0:
        batch = min(batch, max(MIN_BATCH, windows // config.min_batches))
    every = config.valid_every or max(1, min(valid_events // train_events, config.patience // 2))
    return Schedule(batch_size=batch, valid_every=every)
