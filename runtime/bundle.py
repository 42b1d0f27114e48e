"""Opening a verified bundle: the step model, the catalog as the device ranks it, the item ids.

Everything is checked by ``pocketrec.core.bundle.verify_bundle`` before any file reaches numpy or
the interpreter. The float32 catalog (or the int8 codes) is memory-mapped read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pocketrec.core import bundle as fmt
from pocketrec.core.errors import BundleError
from pocketrec.core.idmap import IdMap
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime.step import StepModel


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. ``catalog`` is float32 ``[N, D + 1]`` or :class:`Int8Items`."""

    path: Path
    manifest: fmt.Manifest
    step: StepModel
    catalog: npt.NDArray[np.float32] | Int8Items
    initial_user: npt.NDArray[np.float32]
    items: IdMap
    titles: list[str | None] | None

    @property
    def num_items(self) -> int:
        return self.manifest.num_items


def open_bundle(path: str | Path) -> Bundle:
    """Verify and load the bundle directory ``path`` (raises ``BundleError`` if anything is off)."""
    root = Path(path)
    manifest = fmt.verify_bundle(root)
    step = StepModel((root / fmt.STEP_MODEL).read_bytes(), source=str(root / fmt.STEP_MODEL))
    if step.state_dim != manifest.state_dim:
        raise BundleError(
            f"{root / fmt.STEP_MODEL}: state dimension {step.state_dim}, the manifest says "
            f"{manifest.state_dim}"
        )
    catalog: npt.NDArray[np.float32] | Int8Items
    if manifest.catalog_dtype == "int8":
        catalog = Int8Items(
            codes=np.load(root / fmt.CATALOG_INT8_CODES, mmap_mode="r", allow_pickle=False),
            scales=np.load(root / fmt.CATALOG_INT8_SCALES, allow_pickle=False),
        )
    else:
        catalog = np.load(root / fmt.CATALOG, mmap_mode="r", allow_pickle=False)
    items = IdMap.load(root / fmt.ITEMS)
    if len(items) != manifest.num_items:
        raise BundleError(f"{root / fmt.ITEMS}: {len(items)} ids for {manifest.num_items} items")
    titles = None
    if fmt.ITEM_TITLES in manifest.files:
        titles = json.loads((root / fmt.ITEM_TITLES).read_text(encoding="utf-8"))
    return Bundle(
        path=root,
        manifest=manifest,
        step=step,
        catalog=catalog,
        initial_user=np.load(root / fmt.INITIAL_USER, allow_pickle=False),
        items=items,
        titles=titles,
    )
