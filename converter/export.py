"""Export a trained model to an on-device bundle, with a parity gate.

Steps: the Keras step model is exported (Keras ``ExportArchive``, one endpoint named ``step``) and
converted to TFLite with built-in ops only (float32, float16 weights, or dynamic-range int8); the
parity gate replays held-out histories through the TFLite interpreter and compares the final user
vectors with the Keras sequence model (float32 must agree within ``PARITY_TOLERANCE`` max abs, or
the export fails; quantized models report their difference and top-10 overlap); the catalog is
written as float32 or int8; every file is hashed into ``manifest.json``; the bundle is verified,
evaluated on the validation (and test) histories *as shipped*, and moved into place atomically.
"""

from __future__ import annotations

import contextlib
import io
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
import tensorflow as tf
from keras.export import ExportArchive

from pocketrec.converter import model_dir
from pocketrec.converter.model import InterestModel
from pocketrec.converter.training import user_vectors
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import PocketrecError
from pocketrec.core.events import EVENT_NAMES
from pocketrec.core.files import install_directory
from pocketrec.core.heldout import StageData
from pocketrec.core.ranking import select_topk
from pocketrec.native.int8 import quantize_int8
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.evaluation import evaluate_user_vectors, replay_user_vectors
from pocketrec.runtime.step import StepModel

PARITY_TOLERANCE = 1e-4
PARITY_USERS = 200


class ExportError(PocketrecError, RuntimeError):
    """The export failed a check (parity, unsupported op, verification)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and what the export measured."""

    path: Path
    manifest: fmt.Manifest
    parity: dict[str, float]
    sizes: dict[str, int]


def convert_step_model(model: InterestModel, model_dtype: str = "float32") -> bytes:
    """The step model as a ``.tflite`` flatbuffer with one signature ``step``."""
    if model_dtype not in fmt.MODEL_DTYPES:
        raise ValueError(f"model dtype must be one of {fmt.MODEL_DTYPES}, got {model_dtype!r}")
    hidden = model.config.state_dim
    step_model = model.step_model

    def step(item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        new_state, user = step_model([item, event, state])
        return {"state": new_state, "user": user}

    signature = [
        tf.TensorSpec((1, 1), tf.int32, name="item"),
        tf.TensorSpec((1, 1), tf.int32, name="event"),
        tf.TensorSpec((1, hidden), tf.float32, name="state"),
    ]

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        archive = ExportArchive()
        archive.track(step_model)
        archive.add_endpoint("step", tf.function(step, input_signature=signature))
        archive.write_out(tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["step"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if model_dtype != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if model_dtype == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as exc:  # the converter raises several unrelated types
            raise ExportError(f"TFLite conversion failed: {exc}") from exc
    return flatbuffer


def parity_check(
    model: InterestModel, tflite: bytes, data: StageData, model_dtype: str
) -> dict[str, float]:
    """Compare TFLite replay with the Keras model on ``data``; raises for float32 mismatch."""
    keras_users = user_vectors(model, data.items, data.events)
    lite_users = replay_user_vectors(StepModel(tflite), data.items, data.events)
    max_abs = float(np.max(np.abs(keras_users - lite_users))) if len(data) else 0.0
    catalog = model.catalog()
    overlap = []
    for k_user, l_user, ex in zip(keras_users, lite_users, data.excluded, strict=True):
        eligible = np.ones(catalog.shape[0], dtype=bool)
        eligible[ex] = False
        a, _ = select_topk(catalog @ k_user, eligible, 10)
        b, _ = select_topk(catalog @ l_user, eligible, 10)
        overlap.append(len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1))
    result = {
        "users": float(len(data)),
        "max_abs_diff": max_abs,
        "top10_overlap": float(np.mean(overlap)) if overlap else 1.0,
    }
    if model_dtype == "float32" and not max_abs <= PARITY_TOLERANCE:
        raise ExportError(
            f"parity check failed: TFLite user vectors differ from Keras by {max_abs:.3g} "
            f"(> {PARITY_TOLERANCE}) on {len(data)} held-out histories"
        )
    return result


def _write_catalog(root: Path, catalog: npt.NDArray[np.float32], catalog_dtype: str) -> None:
    if catalog_dtype == "int8":
        q = quantize_int8(catalog)
        np.save(root / fmt.CATALOG_INT8_CODES, q.codes, allow_pickle=False)
        np.save(root / fmt.CATALOG_INT8_SCALES, q.scales, allow_pickle=False)
    elif catalog_dtype == "float32":
        np.save(root / fmt.CATALOG, catalog, allow_pickle=False)
    else:
        raise ValueError(
            f"catalog dtype must be one of {fmt.CATALOG_DTYPES}, got {catalog_dtype!r}"
        )


def export_bundle(
    model_path: Path,
    out: Path,
    *,
    model_dtype: str = "float32",
    catalog_dtype: str = "float32",
    model_version: int | None = None,
    evaluate_test: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Convert the model directory ``model_path`` into the bundle directory ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --force)")
    trained = model_dir.load(Path(model_path))
    model = trained.model
    valid = trained.heldout.stage("valid")
    tflite = convert_step_model(model, model_dtype)
    parity = parity_check(model, tflite, valid.subset(PARITY_USERS), model_dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
    try:
        (staging / fmt.STEP_MODEL).write_bytes(tflite)
        _write_catalog(staging, model.catalog(), catalog_dtype)
        np.save(staging / fmt.INITIAL_USER, model.initial_user(), allow_pickle=False)
        trained.items.save(staging / fmt.ITEMS)
        if trained.titles is not None:
            text = json.dumps(trained.titles, ensure_ascii=False)
            (staging / fmt.ITEM_TITLES).write_text(text, encoding="utf-8")
        files = {p.name: fmt.file_entry(p) for p in sorted(staging.iterdir())}
        manifest = fmt.Manifest(
            model_version=int(time.time()) if model_version is None else model_version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            state_dim=model.config.state_dim,
            user_dim=model.config.catalog_dim,
            num_items=model.config.num_items,
            model_dtype=model_dtype,
            catalog_dtype=catalog_dtype,
            files=files,
            event_types=list(EVENT_NAMES),
            metrics={},
        )
        (staging / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        metrics = evaluate_bundle_dir(
            staging, valid, trained.heldout.stage("test") if evaluate_test else None
        )
        metrics["parity"] = parity
        metrics["training"] = {
            k: trained.report[k] for k in ("best_epoch", "seconds") if k in trained.report
        }
        manifest = replace(manifest, metrics=metrics)
        (staging / fmt.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        fmt.verify_bundle(staging)
        install_directory(staging, out, replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sizes = {name: entry.bytes for name, entry in manifest.files.items()}
    return ExportResult(path=out, manifest=manifest, parity=parity, sizes=sizes)


def evaluate_bundle_dir(
    path: Path, valid: StageData, test: StageData | None = None
) -> dict[str, Any]:
    """Metrics of the bundle at ``path`` as the device runs it: TFLite replay + its catalog."""
    loaded = open_bundle(path)
    result: dict[str, Any] = {}
    for name, data in (("valid", valid), ("test", test)):
        if data is None:
            continue
        users = replay_user_vectors(loaded.step, data.items, data.events)
        result[name] = evaluate_user_vectors(loaded.catalog, users, data.targets, data.excluded)
    return result
