"""What one ``recommend`` call ranks: the query, the exclusion mask, and the catalog it runs on.

Every filter (unavailable items, rejected items, consumed items, the per-call ``exclude`` and
``only``) ends up in one boolean mask that the top-k kernel applies inside its scan, so the
kernel never has to over-fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pocketrec.native import topk
from pocketrec.native.arguments import check_k
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime.evaluation import catalog_scores
from pocketrec.runtime.results import Recommendations, TitledRecommendations
from pocketrec.runtime.serving import ServedBundle

BATCH_MASK_BYTES = 32 << 20
"""Largest exclusion mask (``[B, N]`` bools) one batched kernel call gets: longer batches of
users are ranked in several calls."""


@dataclass(frozen=True)
class Ranking:
    """``query`` float32 ``[D + 1]`` (the user vector after negative-feedback demotion),
    ``exclude`` bool ``[N]`` (True: never returned), on the catalog of ``served``."""

    query: npt.NDArray[np.float32]
    exclude: npt.NDArray[np.bool_]
    served: ServedBundle
    backend: str

    @property
    def catalog(self) -> npt.NDArray[np.float32] | Int8Items:
        return self.served.catalog

    def scores(self) -> npt.NDArray[np.float32]:
        """float32 ``[N]``: the score of every catalog item *as the kernel orders them* (float32
        inner products, or the int8 rank of ``pocketrec.native.int8``), excluded items included."""
        scores: npt.NDArray[np.float32] = catalog_scores(self.catalog, self.query[None, :])[0]
        return scores

    def top(self, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Catalog indices int64 and scores float32 of the best ``min(k, eligible)`` items."""
        return topk(self.catalog, self.query, k, exclude=self.exclude, backend=self.backend)

    def ids(self, indices: npt.NDArray[np.int64]) -> list[str]:
        """External ids of catalog indices."""
        item_ids = self.served.item_ids
        return [item_ids[i] for i in indices.tolist()]


def recommendations(
    served: ServedBundle, indices: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
) -> Recommendations:
    """Catalog ``indices`` of ``served`` and their float32 ``scores`` as the public result."""
    item_ids = served.item_ids
    return Recommendations([item_ids[i] for i in indices.tolist()], scores)


def titled(served: ServedBundle, result: Recommendations) -> TitledRecommendations:
    """``result`` with the titles of its items (``TitlesUnavailableError`` without titles)."""
    return TitledRecommendations(*result, served.titles(served.indices(result.ids).tolist()))


def top_batch(
    rankings: Sequence[Ranking], k: int
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """``Ranking.top(k)`` of each ranking, through the kernel's batch call: one pass over the
    catalog for up to ``BATCH_MASK_BYTES // N`` rankings. All must share one ``served`` bundle
    and backend. Each result is what ``top(k)`` returns alone: ``min(k, eligible)`` entries."""
    if not rankings:
        return []
    check_k(k)
    first = rankings[0]
    if any(r.served is not first.served or r.backend != first.backend for r in rankings):
        raise ValueError("top_batch needs rankings of one bundle and backend")
    per_call = max(1, BATCH_MASK_BYTES // max(first.served.num_items, 1))
    out: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []
    for start in range(0, len(rankings), per_call):
        chunk = rankings[start : start + per_call]
        queries = np.stack([r.query for r in chunk])
        masks = np.stack([r.exclude for r in chunk])
        ids, scores = topk(first.catalog, queries, k, exclude=masks, backend=first.backend)
        for row_ids, row_scores in zip(ids, scores, strict=True):
            found = int(np.count_nonzero(row_ids >= 0))  # padding (-1) comes last
            out.append((row_ids[:found].copy(), row_scores[:found].copy()))
    return out


def check_ids(value: object, name: str, what: str = "item ids") -> list[str]:
    """A collection of ids (``what``) as a list of str, or ``ValueError`` (a lone str is
    refused: it would be read as its characters)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a collection of {what} (str), got {value!r}")
    ids = list(value)
    bad = [v for v in ids if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name} must hold {what} (str), got {bad[0]!r}")
    return ids


def apply_call_filters(
    mask: npt.NDArray[np.bool_],
    served: ServedBundle,
    exclude: list[str],
    only: list[str] | None,
) -> npt.NDArray[np.bool_]:
    """``mask`` with the per-call filters added: ``exclude`` ids masked, and with ``only`` every
    item outside it masked too. Unknown ids are ignored. May modify ``mask`` in place."""
    if exclude:
        mask[served.indices(exclude)] = True
    if only is not None:
        keep = served.indices(only)
        restricted = np.ones_like(mask)
        restricted[keep] = mask[keep]
        return restricted
    return mask
