"""Opening a bundle: verified, loaded and proven before it is returned.

:func:`open_bundle` is the proof that a bundle can serve; the sync client opens a new bundle in
its staging folder before it becomes active. In order, each failure a :class:`BundleError`
naming the file and the problem:

1. ``pocketrec.core.bundle.verify_bundle``: the manifest's schema, every file's length and
   SHA-256, the ``.npy`` headers (before any file reaches numpy or the interpreter);
2. the step model loads, allocates and runs one event (``runtime/step.py``: a check of the
   flatbuffer and its graph, then the built-in kernels, then the serving interpreters);
3. dimensions agree: the model's state input and output width = ``state_dim``, its user output
   width = ``user_dim``; the catalog is ``[num_items, user_dim]``, ``initial_user``
   ``[user_dim]``; ``items.json`` holds exactly ``num_items`` unique ids the sync wire accepts;
   ``item_titles.json`` (when present) one title (a string or null) per item;
4. values: ``initial_user`` and the catalog are finite (an int8 catalog: finite, non-negative
   scales). One pass over the catalog, which costs less than the SHA-256 that step 1 computed
   over the same bytes, and the top-k kernel would otherwise silently skip NaN rows and rank
   infinite ones first for every user;
5. exercise: from the initial state, one event on the first item with the first event type, then
   one on the last item with the last event type the manifest lists (so the model's item and
   event tables cover the catalog and the event types), each giving a finite state and user
   vector; then one top-k (``pocketrec.native.topk``, the backend the runtime uses) over the
   catalog with that user vector must return ``min(10, num_items)`` distinct valid indices.

The float32 catalog (or the int8 codes) is memory-mapped read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core import bundle as fmt
from pocketrec.core.errors import BundleError, DataFormatError
from pocketrec.core.idmap import IdMap
from pocketrec.core.wire import first_id_problem
from pocketrec.native import topk
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime.step import StepModel

PROOF_K = 10
"""Results the proof's top-k asks for (fewer when the catalog is smaller)."""

_FINITE_CHUNK_ROWS = 1 << 16  # catalog rows checked per pass: bounded temporary memory


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
    """Verify, load and prove the bundle directory ``path`` (module docstring); raises
    :class:`BundleError` naming the file and the problem."""
    root = Path(path)
    manifest = fmt.verify_bundle(root)
    if manifest.num_items < 1:
        raise BundleError(f"{root / fmt.MANIFEST}: num_items is {manifest.num_items}; need >= 1")
    step = StepModel((root / fmt.STEP_MODEL).read_bytes(), source=str(root / fmt.STEP_MODEL))
    _check_step_dimensions(root, manifest, step)
    bundle = Bundle(
        path=root,
        manifest=manifest,
        step=step,
        catalog=_load_catalog(root, manifest),
        initial_user=_load_initial_user(root, manifest),
        items=_load_items(root, manifest),
        titles=_load_titles(root, manifest),
    )
    _exercise(bundle)
    return bundle


def _check_step_dimensions(root: Path, manifest: fmt.Manifest, step: StepModel) -> None:
    for what, got, field in (
        ("state dimension", step.state_dim, "state_dim"),
        ("user vector width", step.user_dim, "user_dim"),
    ):
        expected = getattr(manifest, field)
        if got != expected:
            raise BundleError(
                f"{root / fmt.STEP_MODEL}: {what} {got}, the manifest says {field} = {expected}"
            )


def _catalog_file(manifest: fmt.Manifest) -> str:
    return fmt.CATALOG_INT8_CODES if manifest.catalog_dtype == "int8" else fmt.CATALOG


def _load_catalog(root: Path, manifest: fmt.Manifest) -> npt.NDArray[np.float32] | Int8Items:
    """The catalog (shapes checked by ``verify_bundle``), checked to be finite."""
    if manifest.catalog_dtype == "int8":
        scales_path = root / fmt.CATALOG_INT8_SCALES
        scales = np.load(scales_path, allow_pickle=False)
        bad = np.flatnonzero(~(np.isfinite(scales) & (scales >= 0)))
        if bad.size:
            raise BundleError(f"{scales_path}: scale of item {bad[0]} is {scales[bad[0]]}")
        codes = np.load(root / fmt.CATALOG_INT8_CODES, mmap_mode="r", allow_pickle=False)
        return Int8Items(codes=codes, scales=scales)
    path = root / fmt.CATALOG
    catalog: npt.NDArray[np.float32] = np.load(path, mmap_mode="r", allow_pickle=False)
    for start in range(0, len(catalog), _FINITE_CHUNK_ROWS):
        finite = np.isfinite(catalog[start : start + _FINITE_CHUNK_ROWS]).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise BundleError(f"{path}: row {row} (item {row}) holds NaN or infinity")
    return catalog


def _load_initial_user(root: Path, manifest: fmt.Manifest) -> npt.NDArray[np.float32]:
    path = root / fmt.INITIAL_USER
    initial: npt.NDArray[np.float32] = np.load(path, allow_pickle=False)
    if not np.all(np.isfinite(initial)):
        raise BundleError(f"{path}: holds NaN or infinity")
    return initial


def _load_items(root: Path, manifest: fmt.Manifest) -> IdMap:
    path = root / fmt.ITEMS
    try:
        items = IdMap.load(path)  # a JSON list of unique strings
    except DataFormatError as exc:
        raise BundleError(str(exc)) from None
    except RecursionError:  # json: arrays nested thousands deep
        raise BundleError(f"{path}: not a JSON list of ids (nested too deep)") from None
    if len(items) != manifest.num_items:
        raise BundleError(f"{path}: {len(items)} ids for {manifest.num_items} items")
    bad = first_id_problem(items.ids)
    if bad is not None:
        index, problem = bad
        raise BundleError(f"{path}: the id of item {index} ({items.id(index)!r}) {problem}")
    return items


def _load_titles(root: Path, manifest: fmt.Manifest) -> list[str | None] | None:
    if fmt.ITEM_TITLES not in manifest.files:
        return None
    path = root / fmt.ITEM_TITLES
    try:
        titles: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(titles, list) or len(titles) != manifest.num_items:
        found = f"{len(titles)} titles" if isinstance(titles, list) else type(titles).__name__
        raise BundleError(f"{path}: expected a list of {manifest.num_items} titles, found {found}")
    for index, title in enumerate(titles):
        if title is not None and not isinstance(title, str):
            raise BundleError(f"{path}: the title of item {index} is not a string or null")
    return titles


def _exercise(bundle: Bundle) -> None:
    """Two events through the step model and one top-k (module docstring, step 5)."""
    last_item, last_event = bundle.num_items - 1, len(bundle.manifest.event_types) - 1
    state = bundle.step.initial_state()
    for item, event in ((0, 0), (last_item, last_event)):
        state, user = bundle.step.checked_step(item, event, state)
    k = min(PROOF_K, bundle.num_items)
    ids, _scores = topk(bundle.catalog, user, k)
    valid = len(ids) == k and len(set(ids.tolist())) == k
    if not valid or not np.all((ids >= 0) & (ids < bundle.num_items)):
        raise BundleError(
            f"{bundle.path / _catalog_file(bundle.manifest)}: the top-{k} of the catalog for the "
            f"probe user vector came out as {ids.tolist()}"
        )
