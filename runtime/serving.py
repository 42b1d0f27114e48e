"""A loaded bundle as the :class:`~pocketrec.runtime.Recommender` serves it.

One :class:`ServedBundle` per opened bundle: the step model (one TFLite interpreter per thread,
since an interpreter must not be called from two threads at once), the memory-mapped catalog, the
item ids and the mask of unavailable items. Replacing the bundle makes a new ``ServedBundle``; an
old one stays valid for the calls that still hold it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from pocketrec.core import bundle as fmt
from pocketrec.core.errors import TitlesUnavailableError
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime.bundle import Bundle
from pocketrec.runtime.similar import inverse_embedding_norms
from pocketrec.runtime.step import StepModel


class ServedBundle:
    """Thread safety: every method may be called from any thread. The step model is one
    interpreter per calling thread (made on first use); ``unavailable`` is replaced as a whole,
    never modified in place, so a reader sees either the old or the new mask."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.item_ids: list[str] = bundle.items.ids
        self.unavailable: npt.NDArray[np.bool_] = _read_only(np.zeros(bundle.num_items, bool))
        self._local = threading.local()
        self._local.step = bundle.step  # the opening thread reuses the verified interpreter
        self._inverse_norms: npt.NDArray[np.float32] | None = None  # made on first use

    @property
    def manifest(self) -> fmt.Manifest:
        return self.bundle.manifest

    @property
    def catalog(self) -> npt.NDArray[np.float32] | Int8Items:
        return self.bundle.catalog

    @property
    def num_items(self) -> int:
        return self.bundle.num_items

    def index(self, item_id: str) -> int | None:
        """Catalog index of an external item id, ``None`` when the catalog does not hold it."""
        return self.bundle.items.get(item_id, None)

    def indices(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """``int64`` catalog indices of the ids the catalog holds (others are left out)."""
        get = self.bundle.items.get
        found = [i for i in (get(item_id, None) for item_id in item_ids) if i is not None]
        return np.asarray(found, dtype=np.int64)

    def step_model(self) -> StepModel:
        """The calling thread's interpreter for this bundle's step model."""
        model: StepModel | None = getattr(self._local, "step", None)
        if model is None:
            model = self._local.step = self.bundle.step.clone()
        return model

    def initial_state(self) -> npt.NDArray[np.float32]:
        """Zeros float32 ``[H]``."""
        return np.zeros(self.manifest.state_dim, dtype=np.float32)

    def item_row(self, index: int) -> npt.NDArray[np.float32]:
        """Catalog row float32 ``[D + 1]`` (dequantized for an int8 catalog)."""
        catalog = self.catalog
        row: npt.NDArray[np.float32]
        if isinstance(catalog, Int8Items):
            row = catalog.codes[index].astype(np.float32) * catalog.scales[index]
        else:
            row = np.array(catalog[index], dtype=np.float32)
        return row

    def titles(self, indices: Iterable[int]) -> list[str | None]:
        """Titles of catalog indices (``None`` for an item without one), or
        :class:`TitlesUnavailableError` when the bundle has no ``item_titles.json``."""
        titles = self.bundle.titles
        if titles is None:
            raise TitlesUnavailableError(
                f"bundle {self.bundle.path} (model version {self.manifest.model_version}) has no "
                f"{fmt.ITEM_TITLES}: its training data had no titles (a RecBole .item file or a "
                "title column gives them); info()['titles'] says whether a bundle has them"
            )
        return [titles[i] for i in indices]

    def inverse_norms(self) -> npt.NDArray[np.float32]:
        """float32 ``[N]``: ``1 / |e_j|`` of every catalog row's embedding part (NaN for an
        all-zero one), computed once (``pocketrec.runtime.similar``)."""
        norms = self._inverse_norms
        if norms is None:  # two threads may both compute it: same values, harmless
            norms = self._inverse_norms = inverse_embedding_norms(self.catalog)
        return norms

    def set_unavailable(self, item_ids: Iterable[str]) -> None:
        """Replace the unavailable mask with one marking ``item_ids`` (unknown ids ignored)."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.indices(item_ids)] = True
        self.unavailable = _read_only(mask)


def _read_only(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    mask.flags.writeable = False
    return mask
