"""``pocketrec evaluate``: the converter's offline evaluation, replayed through a live
:class:`~pocketrec.runtime.Recommender`.

The data is split leave-one-out exactly as for training (``pocketrec.core.split``). For every kept
user, the history before the held-out target is fed event by event to ``Recommender.observe``;
then the recommender's :class:`~pocketrec.runtime.Ranking` (query after demotion, exclusion mask
with ``exclude_seen``: the consumed and the rejected items, i.e. the user's whole history) ranks
the target against every other item with the same function the converter uses
(``pocketrec.runtime.evaluation.evaluate_user_vectors``; the target itself is never excluded).
With demotion off (``λ = 0``) this is the offline protocol, so the metrics equal the ones in the
bundle's manifest within floating-point tolerance; with ``λ > 0`` they measure the device's
negative-feedback rule as well.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketrec.core.dataset import Interactions
from pocketrec.core.events import EventType
from pocketrec.core.heldout import HeldOut
from pocketrec.core.metrics import DEFAULT_KS
from pocketrec.core.split import Stage, leave_one_out
from pocketrec.runtime.evaluation import evaluate_user_vectors
from pocketrec.runtime.recommender import Recommender
from pocketrec.runtime.serving import ServedBundle

EVAL_USER = "pocketrec-evaluate"
"""The profile the replay uses (reset before each held-out user)."""


@dataclass(frozen=True)
class ReplayResult:
    """Metrics (keys as in ``pocketrec.core.metrics``) over ``users`` replayed users.

    ``skipped_users``: users whose target the catalog does not hold; ``unknown_events``: history
    events on items it does not hold (accepted by ``observe``, vector unchanged)."""

    metrics: dict[str, float]
    users: int
    skipped_users: int
    events: int
    unknown_events: int
    model_version: int
    seconds: float


def replay_evaluate(
    rec: Recommender,
    data: Interactions,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    stage: Stage = "test",
) -> ReplayResult:
    """Replay ``data``'s held-out users of ``stage`` through ``rec`` (see the module docstring).

    ``rec`` must have no db. Uses the profile :data:`EVAL_USER`, started from nothing for each
    user (dismissals included, which ``reset`` would keep); the bundle must not be replaced
    meanwhile. Every history event is observed, ``dislike`` and ``dismiss`` included, so with
    ``λ > 0`` the demotion acts on the ranking exactly as on the device.
    """
    start = time.perf_counter()
    held = HeldOut.from_split(leave_one_out(data)).stage(stage)
    item_ids = data.items.ids
    queries, targets, excluded = [], [], []
    served: ServedBundle | None = None
    skipped = events = unknown = 0
    for hist_items, hist_events, target in zip(
        held.items, held.events, held.targets.tolist(), strict=True
    ):
        rec._discard(EVAL_USER)
        for item, event in zip(hist_items.tolist(), hist_events.tolist(), strict=True):
            unknown += not rec.observe(item_ids[item], EventType(event), user=EVAL_USER)
        events += len(hist_items)
        ranking = rec.ranking(user=EVAL_USER)
        if served is not None and ranking.served is not served:
            raise RuntimeError("the bundle was replaced during the evaluation")
        served = ranking.served
        target_index = served.index(item_ids[target])
        if target_index is None:
            skipped += 1
            continue
        queries.append(ranking.query)
        targets.append(target_index)
        excluded.append(np.flatnonzero(ranking.exclude))
    rec._discard(EVAL_USER)
    if served is None or not queries:
        raise ValueError(
            f"no {stage} user to evaluate: the data has {len(held)} held-out users, and the "
            "bundle's catalog holds none of their targets"
        )
    metrics = evaluate_user_vectors(
        served.catalog, np.stack(queries), np.asarray(targets, dtype=np.int64), excluded, ks=ks
    )
    return ReplayResult(
        metrics=metrics,
        users=len(queries),
        skipped_users=skipped,
        events=events,
        unknown_events=unknown,
        model_version=served.manifest.model_version,
        seconds=time.perf_counter() - start,
    )
