"""Full-ranking evaluation of user vectors against a catalog *as the device ranks it*.

The protocol of ``pocketrec.core.metrics``: each user's target is ranked against every item not
in the user's history (ties pessimistic). Scores come from the same arithmetic the kernels use:
float32 inner products for a float32 catalog, and the int8 rank (``pocketrec.native.int8``) for an
int8 catalog; top-K lists (for coverage) come from ``pocketrec.native.topk`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pocketrec.core.metrics import DEFAULT_KS, MetricAccumulator
from pocketrec.native import topk
from pocketrec.native.int8 import Int8Items, quantize_rows
from pocketrec.native.reference import int8_ranks
from pocketrec.runtime.step import StepModel

Catalog = npt.NDArray[np.float32] | Int8Items
_BATCH = 512


def catalog_scores(catalog: Catalog, users: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``[B, N]`` ranking scores of ``users`` ``[B, D]``: what the kernel orders items by."""
    if isinstance(catalog, Int8Items):
        qcodes, _ = quantize_rows(users)
        return np.ascontiguousarray(int8_ranks(catalog.codes, catalog.scales, qcodes).T)
    scores: npt.NDArray[np.float32] = users @ np.asarray(catalog).T
    return scores


def rank_targets(
    catalog: Catalog,
    users: npt.NDArray[np.float32],
    targets: npt.NDArray[np.int64],
    excluded: Sequence[npt.NDArray[np.int64]],
    *,
    top_k: int = max(DEFAULT_KS),
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Ranks ``[B]`` of each target (0 = best) and the top-``top_k`` lists ``[B, top_k]``."""
    n = catalog.shape[0]
    scores = catalog_scores(catalog, users)
    mask = np.zeros((len(users), n), dtype=bool)
    for b, ex in enumerate(excluded):
        mask[b, ex] = True
    mask[np.arange(len(users)), targets] = False
    target_scores = scores[np.arange(len(users)), targets]
    at_least = (scores >= target_scores[:, None]) & ~mask
    ranks = at_least.sum(axis=1).astype(np.int64) - 1  # ties count above the target
    top_ids, _ = topk(catalog, np.ascontiguousarray(users), top_k, exclude=mask)
    return ranks, top_ids


def evaluate_user_vectors(
    catalog: Catalog,
    users: npt.NDArray[np.float32],
    targets: npt.NDArray[np.int64],
    excluded: Sequence[npt.NDArray[np.int64]],
    *,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Metrics (HR, NDCG, MRR, Precision, Recall, coverage @ ``ks``) of one vector per user."""
    acc = MetricAccumulator(catalog.shape[0], ks)
    for start in range(0, len(users), _BATCH):
        stop = start + _BATCH
        ranks, tops = rank_targets(
            catalog, users[start:stop], targets[start:stop], excluded[start:stop], top_k=max(ks)
        )
        for rank, top in zip(ranks.tolist(), tops, strict=True):
            acc.add(rank, top[top >= 0])
    return acc.result()


def replay_user_vectors(
    step: StepModel,
    items: Sequence[npt.NDArray[np.int32]],
    events: Sequence[npt.NDArray[np.int8]],
) -> npt.NDArray[np.float32]:
    """User vectors ``[U, D + 1]`` after replaying each history event by event through ``step``."""
    users = []
    for hist_items, hist_events in zip(items, events, strict=True):
        _state, user = step.replay(hist_items, hist_events)
        if user is None:
            raise ValueError("every history must have at least one event")
        users.append(user)
    return np.stack(users).astype(np.float32)
