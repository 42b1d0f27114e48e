"""The held-out part of a leave-one-out split, in a compact form that can be saved with a model.

For each kept user ``k``: the user's events up to and including the test target (``items``,
``events``) and the positions of the validation and test targets in them. The history of a stage
is everything before its target; the excluded items are that history's items minus the target
(see ``pocketrec.core.split``). Saved as one ``.npz`` (no pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pocketrec.core.split import Split, Stage, excluded_items


@dataclass(frozen=True)
class StageData:
    """Histories, targets ``int64 [U]`` and excluded items of one stage (valid or test)."""

    items: list[npt.NDArray[np.int32]]
    events: list[npt.NDArray[np.int8]]
    targets: npt.NDArray[np.int64]
    excluded: list[npt.NDArray[np.int64]]

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, count: int) -> StageData:
        """The first ``count`` users."""
        return StageData(
            self.items[:count], self.events[:count], self.targets[:count], self.excluded[:count]
        )


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Concatenated sequences (``offsets`` ``int64 [U + 1]``) and target positions ``int64 [U]``."""

    items: npt.NDArray[np.int32]
    events: npt.NDArray[np.int8]
    offsets: npt.NDArray[np.int64]
    valid_pos: npt.NDArray[np.int64]
    test_pos: npt.NDArray[np.int64]

    @classmethod
    def from_split(cls, split: Split) -> HeldOut:
        seqs, evs = [], []
        for k in range(split.num_users):
            u = int(split.users[k])
            end = int(split.test_pos[k]) + 1
            seqs.append(split.data.sequences[u][:end])
            evs.append(split.data.events[u][:end])
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        return cls(
            items=np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32),
            events=np.concatenate(evs).astype(np.int8) if evs else np.zeros(0, np.int8),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            valid_pos=np.asarray(split.valid_pos, dtype=np.int64),
            test_pos=np.asarray(split.test_pos, dtype=np.int64),
        )

    @property
    def num_users(self) -> int:
        return len(self.valid_pos)

    def stage(self, stage: Stage) -> StageData:
        """Histories, targets and excluded items for ``"valid"`` or ``"test"``."""
        positions = self.valid_pos if stage == "valid" else self.test_pos
        items, events, targets, excluded = [], [], [], []
        for k in range(self.num_users):
            start = int(self.offsets[k])
            pos = int(positions[k])
            hist = self.items[start : start + pos]
            target = int(self.items[start + pos])
            items.append(hist)
            events.append(self.events[start : start + pos])
            targets.append(target)
            excluded.append(excluded_items(hist, target))
        return StageData(items, events, np.asarray(targets, dtype=np.int64), excluded)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            items=self.items,
            events=self.events,
            offsets=self.offsets,
            valid_pos=self.valid_pos,
            test_pos=self.test_pos,
        )

    @classmethod
    def load(cls, path: Path) -> HeldOut:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                items=z["items"],
                events=z["events"],
                offsets=z["offsets"],
                valid_pos=z["valid_pos"],
                test_pos=z["test_pos"],
            )
