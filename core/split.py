"""Leave-one-out split per user, for full-ranking evaluation (the S3-Rec / RecBole protocol).

Rules, for each user's time-ordered events:

- *Target-eligible* events are all events except negative feedback (``dislike``, ``dismiss``).
  For click-only data (the Amazon files) that is every event.
- The **test target** is the last eligible event, the **validation target** the second-to-last.
- **Training** is every event before the validation target, negatives included (they are fed to
  the model as ``dislike``/``dismiss`` events). The history before the test target is every
  event before it: training, the validation target and any negatives in between. Negative events
  after the test target are not used.
- Users with fewer than ``min_events`` (default and minimum 3) eligible events are dropped and
  counted (:attr:`Split.dropped_users`): the RecBole / S3-Rec convention (5-core data never has
  such users; ml-100k and Video.txt may). Every kept user has at least one positive training event.
- Full ranking excludes the items of the user's history (:meth:`Split.excluded`), except the
  target itself: a user who bought the same item again must still be able to hit it.

Positions are indices into ``data.sequences[user]``; ``k`` below numbers the kept users ``0..U-1``
and ``users[k]`` is the matching index into ``data.users``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pocketrec.core.dataset import Interactions
from pocketrec.core.events import negative_mask

Stage = Literal["valid", "test"]
MIN_EVENTS = 3


@dataclass(frozen=True, eq=False)
class Split:
    """A leave-one-out split of ``data`` (see the module docstring).

    ``users``: ``int32 [U]`` kept users (indices into ``data.users``); ``valid_pos`` / ``test_pos``:
    ``int64 [U]`` positions of the targets; ``dropped_users``: ``int32`` indices of dropped users.
    """

    data: Interactions
    users: npt.NDArray[np.int32]
    valid_pos: npt.NDArray[np.int64]
    test_pos: npt.NDArray[np.int64]
    dropped_users: npt.NDArray[np.int32]
    min_events: int = MIN_EVENTS

    @property
    def num_users(self) -> int:
        """Number of kept users ``U``."""
        return len(self.users)

    @property
    def num_dropped(self) -> int:
        """Number of users dropped for having fewer than ``min_events`` eligible events."""
        return len(self.dropped_users)

    @property
    def valid_target(self) -> npt.NDArray[np.int32]:
        """``int32 [U]``: validation target item of each kept user."""
        return self._items_at(self.valid_pos)

    @property
    def test_target(self) -> npt.NDArray[np.int32]:
        """``int32 [U]``: test target item of each kept user."""
        return self._items_at(self.test_pos)

    @property
    def train(self) -> list[npt.NDArray[np.int32]]:
        """Training item sequences (``int32``, views), one per kept user."""
        return [self.history(k, "valid")[0] for k in range(self.num_users)]

    @property
    def train_events(self) -> list[npt.NDArray[np.int8]]:
        """Training event codes (``int8``, views), aligned with :attr:`train`."""
        return [self.history(k, "valid")[1] for k in range(self.num_users)]

    def _items_at(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        seqs = self.data.sequences
        return np.array(
            [seqs[u][p] for u, p in zip(self.users.tolist(), positions.tolist(), strict=True)],
            dtype=np.int32,
        )

    def _position(self, k: int, stage: Stage) -> int:
        if stage == "valid":
            return int(self.valid_pos[k])
        if stage == "test":
            return int(self.test_pos[k])
        raise ValueError(f"unknown stage {stage!r}; expected 'valid' or 'test'")

    def history(self, k: int, stage: Stage) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int8]]:
        """(items ``int32``, events ``int8``) of kept user ``k`` before the ``stage`` target.

        ``history(k, "valid")`` is the training part. The arrays are views: do not modify them.
        """
        end = self._position(k, stage)
        u = int(self.users[k])
        return self.data.sequences[u][:end], self.data.events[u][:end]

    def target(self, k: int, stage: Stage) -> int:
        """Item index of kept user ``k``'s ``stage`` target."""
        return int(self.data.sequences[int(self.users[k])][self._position(k, stage)])

    def excluded(self, k: int, stage: Stage) -> npt.NDArray[np.int64]:
        """``int64``, sorted unique: items to leave out of the ranking (history minus target)."""
        return excluded_items(self.history(k, stage)[0], self.target(k, stage))

    def summary(self) -> str:
        """One line: kept and dropped users."""
        return (
            f"leave-one-out split: {self.num_users:,} users kept, {self.num_dropped:,} dropped "
            f"(< {self.min_events} target-eligible events)"
        )


def excluded_items(history: npt.NDArray[np.integer], target: int) -> npt.NDArray[np.int64]:
    """``int64``, sorted unique: the items of ``history`` except ``target`` (not ranked)."""
    items: npt.NDArray[np.int64] = np.unique(history).astype(np.int64)
    without_target: npt.NDArray[np.int64] = items[items != target]
    return without_target


def leave_one_out(data: Interactions, min_events: int = MIN_EVENTS) -> Split:
    """Split ``data`` per user (rules in the module docstring); ``min_events`` must be >= 3."""
    if min_events < MIN_EVENTS:
        raise ValueError(f"min_events must be >= {MIN_EVENTS}, got {min_events}")
    n = data.num_users
    lengths = np.array([len(e) for e in data.events], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    negative = negative_mask(np.concatenate(data.events)) if n else np.zeros(0, dtype=bool)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    negatives = np.bincount(owner[negative], minlength=n)
    keep = lengths - negatives >= min_events
    valid_pos = lengths - 2  # right for users without negative events
    test_pos = lengths - 1
    for u in np.flatnonzero(keep & (negatives > 0)).tolist():
        eligible = np.flatnonzero(~negative[starts[u] : starts[u] + lengths[u]])
        valid_pos[u], test_pos[u] = eligible[-2], eligible[-1]
    return Split(
        data=data,
        users=np.flatnonzero(keep).astype(np.int32),
        valid_pos=valid_pos[keep],
        test_pos=test_pos[keep],
        dropped_users=np.flatnonzero(~keep).astype(np.int32),
        min_events=min_events,
    )
