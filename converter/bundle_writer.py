"""Write, verify, evaluate and install a bundle directory (format in ``pocketrec.core.bundle``).

Everything goes into a temporary sibling of ``out``: the files, a manifest with every file's
length and SHA-256, the metrics of the bundle *as shipped* (the staged bundle opened with the
runtime's ``open_bundle`` and its TFLite model replayed over the validation and test histories,
ranked against its own catalog), then ``verify_bundle``, and only then the directory is fsynced
and renamed into place; on any failure the staging directory is removed and ``out`` is untouched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core import bundle as fmt
from pocketrec.core.files import install_directory
from pocketrec.core.heldout import StageData
from pocketrec.core.idmap import IdMap
from pocketrec.native.int8 import quantize_int8
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.evaluation import Catalog, evaluate_user_vectors, replay_user_vectors


@dataclass(frozen=True)
class BundleContents:
    """What goes into a bundle: the TFLite step model, the float32 catalog ``[N, D]``, the
    initial user vector ``[D]``, the item ids (and titles) in catalog order, the state size
    ``H`` and the event type names (a prefix of ``pocketrec.core.events.EVENT_NAMES``)."""

    tflite: bytes
    catalog: npt.NDArray[np.float32]
    initial_user: npt.NDArray[np.float32]
    items: IdMap
    titles: list[str | None] | None
    state_dim: int
    event_types: list[str]


def shipped_catalog(catalog: npt.NDArray[np.float32], catalog_dtype: str) -> Catalog:
    """The catalog as the device will rank it: float32, or int8 codes and scales."""
    if catalog_dtype == "int8":
        return quantize_int8(catalog)
    if catalog_dtype == "float32":
        return catalog
    raise ValueError(f"catalog dtype must be one of {fmt.CATALOG_DTYPES}, got {catalog_dtype!r}")


def check_out(out: Path, overwrite: bool) -> Path:
    """``out`` as a path, refused early when it holds something and ``overwrite`` is off."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --force)")
    return out


def write_bundle(
    contents: BundleContents,
    out: Path,
    *,
    model_dtype: str,
    catalog_dtype: str,
    model_version: int | None,
    valid: StageData | None,
    test: StageData | None,
    metrics: dict[str, Any],
) -> fmt.Manifest:
    """Stage, evaluate as shipped, verify and install the bundle at ``out``; ``metrics`` are
    added to the manifest's (``valid``/``test`` come from the evaluation)."""
    catalog = shipped_catalog(contents.catalog, catalog_dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
    try:
        (staging / fmt.STEP_MODEL).write_bytes(contents.tflite)
        if isinstance(catalog, np.ndarray):
            np.save(staging / fmt.CATALOG, catalog, allow_pickle=False)
        else:
            np.save(staging / fmt.CATALOG_INT8_CODES, catalog.codes, allow_pickle=False)
            np.save(staging / fmt.CATALOG_INT8_SCALES, catalog.scales, allow_pickle=False)
        np.save(staging / fmt.INITIAL_USER, contents.initial_user, allow_pickle=False)
        contents.items.save(staging / fmt.ITEMS)
        if contents.titles is not None:
            text = json.dumps(contents.titles, ensure_ascii=False)
            (staging / fmt.ITEM_TITLES).write_text(text, encoding="utf-8")
        files = {p.name: fmt.file_entry(p) for p in sorted(staging.iterdir())}
        manifest = fmt.Manifest(
            model_version=int(time.time()) if model_version is None else model_version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            state_dim=contents.state_dim,
            user_dim=int(contents.catalog.shape[1]),
            num_items=int(contents.catalog.shape[0]),
            model_dtype=model_dtype,
            catalog_dtype=catalog_dtype,
            files=files,
            event_types=list(contents.event_types),
            metrics={},
        )
        (staging / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        shipped = evaluate_bundle_dir(staging, valid, test)
        manifest = replace(manifest, metrics={**shipped, **metrics})
        (staging / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        fmt.verify_bundle(staging)
        install_directory(staging, out, replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def evaluate_bundle_dir(
    path: Path, valid: StageData | None, test: StageData | None = None
) -> dict[str, Any]:
    """Metrics of the bundle at ``path`` as the device runs it: TFLite replay + its catalog."""
    loaded = open_bundle(path)
    result: dict[str, Any] = {}
    for name, data in (("valid", valid), ("test", test)):
        if data is None or not len(data):
            continue
        users = replay_user_vectors(loaded.step, data.items, data.events)
        result[name] = evaluate_user_vectors(loaded.catalog, users, data.targets, data.excluded)
    return result
