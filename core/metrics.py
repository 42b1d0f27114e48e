"""Full-ranking evaluation: the target is ranked against every item not excluded.

Conventions:

- :func:`rank_of_target` returns the 0-based rank of the target among the non-excluded items.
  Ties are pessimistic: every other item whose score equals the target's counts as ranked above
  it (a constant scorer gets the worst rank, not a lucky one). NaN scores raise ``ValueError``.
- :func:`topk_items` returns the best non-excluded items, best first, equal scores by lower index
  (the same order as ``pocketrec.native.topk``). Only coverage uses these lists.
- With one held-out item per user, for each K: ``hr@K`` = fraction of users with rank < K,
  ``ndcg@K`` = mean of ``1 / log2(rank + 2)`` over users with rank < K (0 otherwise),
  ``recall@K`` = ``hr@K``, ``precision@K`` = ``hr@K / K``, ``coverage@K`` = fraction of the
  catalog that appears in at least one user's top-K list; ``mrr`` = mean ``1 / (rank + 1)``
  (not truncated). All keys are lower-case: ``hr@10``, ``ndcg@10``, ``mrr``, ...

:class:`MetricAccumulator` takes users one at a time; :func:`evaluate_ranks` feeds it a batch, so
both give identical numbers. :func:`evaluate` runs a scorer over a :class:`~.split.Split`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from pocketrec.core.events import negative_mask
from pocketrec.core.ranking import select_topk
from pocketrec.core.split import Split, Stage

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
"""Cut-offs reported by default."""

Scorer = Callable[[int, npt.NDArray[np.int32], npt.NDArray[np.int8]], npt.NDArray[np.floating]]
"""``scorer(user, history_items, history_events) -> scores [num_items]`` (user indexes
``data.users``; history arrays as returned by :meth:`Split.history`)."""


def _eligible(num_items: int, exclude: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
    """``bool [num_items]``: True for items that are not excluded."""
    mask = np.ones(num_items, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if ex.size and (ex.min() < 0 or ex.max() >= num_items):
            raise ValueError(f"excluded indices must be in 0..{num_items - 1}")
        mask[ex] = False
    return mask


def _checked_scores(scores: npt.ArrayLike) -> npt.NDArray[np.floating]:
    s = np.asarray(scores)
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"scores must be a 1-D numeric array, got shape {s.shape} {s.dtype}")
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def rank_of_target(scores: npt.ArrayLike, target: int, exclude: npt.ArrayLike | None = None) -> int:
    """0-based rank of ``target`` among non-excluded items (ties pessimistic, see module doc).

    ``scores``: ``[N]`` (float32 usually); ``exclude``: item indices to leave out (may repeat;
    must not contain ``target`` — ``ValueError``).
    """
    s = _checked_scores(scores)
    if not 0 <= target < len(s):
        raise ValueError(f"target {target} out of range for {len(s)} items")
    eligible = _eligible(len(s), exclude)
    if not eligible[target]:
        raise ValueError(f"target {target} is in the excluded items")
    at_least = (s >= s[target]) & eligible
    return int(np.count_nonzero(at_least)) - 1


def topk_items(
    scores: npt.ArrayLike, k: int, exclude: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """``int64 [min(k, eligible)]``: best non-excluded items, best first, ties by lower index."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = _checked_scores(scores)
    best, _scores = select_topk(s, _eligible(len(s), exclude), k)
    return best


class MetricAccumulator:
    """Collects one user at a time (rank + top-K list); :meth:`result` gives the metric dict."""

    def __init__(self, num_items: int, ks: Iterable[int] = DEFAULT_KS) -> None:
        """``num_items``: catalog size (for coverage); ``ks``: cut-offs, each >= 1."""
        self.ks = tuple(sorted(set(ks)))
        if num_items < 1 or not self.ks or self.ks[0] < 1:
            raise ValueError(f"need num_items >= 1 and cut-offs >= 1, got {num_items}, {self.ks}")
        self.num_items = num_items
        self._ranks: list[int] = []
        self._covered = {k: np.zeros(num_items, dtype=bool) for k in self.ks}

    def __len__(self) -> int:
        return len(self._ranks)

    def add(self, rank: int, topk: npt.ArrayLike) -> None:
        """Record one user: ``rank`` (0-based) and the top list (best first, >= max(ks) long
        unless fewer items were eligible)."""
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        top = np.asarray(topk, dtype=np.int64).reshape(-1)
        if top.size and (top.min() < 0 or top.max() >= self.num_items):
            raise ValueError(f"top-K items must be in 0..{self.num_items - 1}")
        self._ranks.append(int(rank))
        for k, covered in self._covered.items():
            covered[top[:k]] = True

    def result(self) -> dict[str, float]:
        """``hr@K, ndcg@K, precision@K, recall@K, coverage@K`` for each K, and ``mrr``."""
        if not self._ranks:
            raise ValueError("no users were added")
        ranks = np.asarray(self._ranks, dtype=np.float64)
        out: dict[str, float] = {}
        for k in self.ks:
            hit = ranks < k
            hr = float(hit.mean())
            out[f"hr@{k}"] = hr
            out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
            out[f"precision@{k}"] = hr / k
            out[f"recall@{k}"] = hr
            out[f"coverage@{k}"] = float(np.count_nonzero(self._covered[k])) / self.num_items
        out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
        return out


def evaluate_ranks(
    ranks: npt.ArrayLike,
    topk_lists: Sequence[npt.ArrayLike] | npt.NDArray[np.integer],
    num_items: int,
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Metrics of a batch: ``ranks [U]`` 0-based, ``topk_lists`` one list per user (best first)."""
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    if len(r) != len(topk_lists):
        raise ValueError(f"{len(r)} ranks but {len(topk_lists)} top-K lists")
    acc = MetricAccumulator(num_items, ks)
    for rank, top in zip(r.tolist(), topk_lists, strict=True):
        acc.add(rank, top)
    return acc.result()


def evaluate(
    split: Split, scorer: Scorer, stage: Stage = "test", ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Full-ranking metrics of ``scorer`` on every kept user of ``split`` at ``stage``.

    Each user's history items are excluded (:meth:`Split.excluded`).
    """
    acc = MetricAccumulator(split.data.num_items, ks)
    depth = max(acc.ks)
    for k in range(split.num_users):
        items, events = split.history(k, stage)
        scores = scorer(int(split.users[k]), items, events)
        exclude = split.excluded(k, stage)
        acc.add(
            rank_of_target(scores, split.target(k, stage), exclude),
            topk_items(scores, depth, exclude),
        )
    return acc.result()


def training_popularity(split: Split) -> npt.NDArray[np.int64]:
    """``int64 [num_items]``: count of positive (non-negative-feedback) training events."""
    train_items, train_events = split.train, split.train_events
    counts = np.zeros(split.data.num_items, dtype=np.int64)
    if train_items:
        items = np.concatenate(train_items)
        positive = ~negative_mask(np.concatenate(train_events))
        counts += np.bincount(items[positive], minlength=split.data.num_items)
    return counts


def popularity_baseline(
    split: Split, stage: Stage = "test", ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics of ranking every item by :func:`training_popularity` (same protocol, ties
    pessimistic), a floor any sequential model should beat."""
    scores = training_popularity(split).astype(np.float32)
    return evaluate(split, lambda _u, _items, _events: scores, stage, ks)
