"""What ``Recommender.recommend``, ``recommend_batch`` and ``similar_items`` return.

Both are named tuples, so ``ids, scores = rec.recommend(10)`` unpacks as before; with
``titles=True`` a third field holds the items' titles.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt


class Recommendations(NamedTuple):
    """``ids``: external item ids (list of str), best first; ``scores``: float32
    ``[len(ids)]``, what the items were ranked by (``recommend``: the query's inner product with
    the catalog row, or the int8 score; ``similar_items``: the cosine, in [-1, 1])."""

    ids: list[str]
    scores: npt.NDArray[np.float32]


class TitledRecommendations(NamedTuple):
    """:class:`Recommendations` plus ``titles``: each item's title from the bundle's
    ``item_titles.json`` (``None`` for an item without one)."""

    ids: list[str]
    scores: npt.NDArray[np.float32]
    titles: list[str | None]
