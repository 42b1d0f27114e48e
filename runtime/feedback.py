"""Real-time negative feedback: demoting the items close to the ones a user rejected.

Catalog rows are ``v_j = [e_j, b_j]`` (embedding ``e_j`` float32 ``[D]``, folded item bias
``b_j``) and a user vector is ``q = [u, 1]``, so an item's score is ``s_j = q · v_j``. For each of
the user's most recent rejected items ``r`` (``dislike`` / ``dismiss``; at most ``capacity``) we
keep its unit embedding direction ``d_r = [e_r / |e_r|, 0]`` and the event number it came at. When
ranking,

    a_r = max(q · d_r, 0)              the user's current affinity with that direction
    w_r = decay ** (events since r)    1 right after the rejection, fading with later events
    q'  = q - λ Σ_r w_r a_r d_r        (a rank-R update: ranking stays one kernel call)

so every item's score changes by ``-λ Σ_r w_r a_r |e_j| cos(e_j, e_r)``: items similar to a
rejected one (high cosine) are demoted in proportion to that similarity, orthogonal items are
untouched, opposite ones gain a little, and the item biases are unchanged. With ``λ = 1`` the
next list after a rejection keeps no affinity along ``e_r`` at all: a near-copy of the rejected
item falls to what its bias alone earns. The clip at 0 leaves directions the user has no affinity
with alone, so rejecting more never promotes anything. The ``decay`` hands over to the step
model, which was trained on ``dislike``/``dismiss`` events and carries their longer-term effect:
the explicit demotion is a correction for the next few lists, not a permanent ban (the rejected
items themselves stay excluded through the exclusion mask). ``λ = 0`` switches demotion off: the
ranking of the offline protocol.

Default ``λ = 0`` (off), measured on real negative feedback: MovieLens 100K's low ratings
(``dislike``), its 943 validation users replayed through ``pocketrec evaluate --stage valid
--demotion λ`` (README, "Measured: the negative-feedback demotion"). Every ``λ > 0`` cost
NDCG@10 and MRR there (``λ = 1``: HR@10 0.2259 -> 0.1771, NDCG@10 0.1174 -> 0.0886), and so
did ``λ = 1`` with ``decay = 0`` (only the list right after the rejection demoted): there a
disliked movie's neighbours stay likely next items, and the step model, trained on the
``dislike`` events, already carries what they mean. Apps whose rejections are "less like this"
(a dismissal of a shown recommendation, which that data lacks) can turn it on with
``Recommender.open(..., demotion=λ)``; the rejected items themselves are always excluded.
``decay = 0.7`` (for ``λ > 0``) was chosen earlier on a small synthetic model.

Cost: ``O(D)`` per rejection (one direction), ``O(R·D)`` per ranking.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

DEFAULT_DEMOTION = 0.0
"""Default ``λ``: off (measured on MovieLens 100K's dislikes; module docstring)."""

DEFAULT_DECAY = 0.7
"""Default ``decay``: a rejection's weight is multiplied by this for every later event."""

DEFAULT_CAPACITY = 16
"""How many of a user's most recent rejections demote (older ones are still excluded)."""


def rejection_direction(row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
    """Unit direction float32 ``[D + 1]`` of a catalog row ``[D + 1]``: the embedding part
    normalised, the bias slot 0; ``None`` for an all-zero (or non-finite) embedding."""
    embedding = np.asarray(row[:-1], dtype=np.float64)
    norm = float(np.linalg.norm(embedding))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    direction = np.zeros(len(row), dtype=np.float32)
    direction[:-1] = embedding / norm
    return direction


def demote(
    query: npt.NDArray[np.float32],
    directions: npt.NDArray[np.float32],
    strength: float,
    weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """``q' = q - λ Σ_r w_r max(q · d_r, 0) d_r`` for ``query`` ``[D + 1]``, unit ``directions``
    ``[R, D + 1]`` and ``weights`` ``[R]`` (default 1; see the module docstring); a new
    C-contiguous float32 ``[D + 1]``."""
    if strength == 0.0 or len(directions) == 0:
        return np.array(query, dtype=np.float32)
    affinity = np.maximum(directions @ query, np.float32(0)) * np.float32(strength)
    if weights is not None:
        affinity *= weights
    shift = affinity @ directions
    return np.ascontiguousarray(query - shift, dtype=np.float32)


class RejectedDirections:
    """The unit directions of one user's ``capacity`` most recent rejections, by item id.

    Not thread-safe: the owner (:class:`~pocketrec.runtime.users.LiveUserState`) holds its lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, decay: float = DEFAULT_DECAY) -> None:
        if capacity < 0 or not 0.0 <= decay <= 1.0:
            raise ValueError(f"need capacity >= 0 and 0 <= decay <= 1, got {capacity}, {decay}")
        self.capacity = capacity
        self.decay = decay
        self._by_id: OrderedDict[str, tuple[npt.NDArray[np.float32], int]] = OrderedDict()
        self._matrix: npt.NDArray[np.float32] | None = None  # cache of the stacked directions
        self._when: npt.NDArray[np.float64] | None = None  # and of their event ordinals

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, item_id: str, direction: npt.NDArray[np.float32] | None, ordinal: int) -> None:
        """Record a rejection made at the user's event number ``ordinal`` (the most recent);
        the oldest beyond ``capacity`` is dropped."""
        self.discard(item_id)
        if direction is None or self.capacity == 0:
            return
        self._by_id[item_id] = (direction, ordinal)
        while len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)
        self._matrix = self._when = None

    def discard(self, item_id: str) -> None:
        """Forget the rejection of ``item_id`` (the user engaged with it after all)."""
        if self._by_id.pop(item_id, None) is not None:
            self._matrix = self._when = None

    def clear(self) -> None:
        self._by_id.clear()
        self._matrix = self._when = None

    def apply(
        self, query: npt.NDArray[np.float32], strength: float, ordinal: int
    ) -> npt.NDArray[np.float32]:
        """The demoted query (a new float32 ``[D + 1]``) after the user's event number
        ``ordinal``; see :func:`demote` (weights ``decay ** events since the rejection``)."""
        if not self._by_id or strength == 0.0:
            return np.array(query, dtype=np.float32)
        if self._matrix is None or self._when is None:
            self._matrix = np.stack([d for d, _ in self._by_id.values()])
            self._when = np.array([w for _, w in self._by_id.values()], dtype=np.float64)
        weights = np.power(self.decay, ordinal - self._when).astype(np.float32)
        return demote(query, self._matrix, strength, weights)
