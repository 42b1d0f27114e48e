"""The export pipeline, one straight line for every model:

    step source → contract checks → TFLite → parity gate → bundle writer → verify
    → evaluate as shipped → install

:func:`export` takes anyone's model (a Keras step model, a Keras sequence model with recurrent
layers, a ``tf.Module`` or a SavedModel path, see ``step_source`` and ``stepping``);
:func:`export_bundle` takes a model directory written by ``pocketrec train``. Both only gather
their inputs and call :func:`build_bundle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from pocketrec.converter import model_dir
from pocketrec.converter.bundle_writer import (
    BundleContents,
    check_out,
    shipped_catalog,
    write_bundle,
)
from pocketrec.converter.contract import check_contract
from pocketrec.converter.model import InterestModel
from pocketrec.converter.parity import parity_gate
from pocketrec.converter.step_source import (
    StepSource,
    from_keras_step,
    from_module,
    from_saved_model,
)
from pocketrec.converter.stepping import step_form
from pocketrec.converter.tflite_model import to_tflite
from pocketrec.converter.training import user_vectors
from pocketrec.core import bundle as fmt
from pocketrec.core.dataset import Interactions
from pocketrec.core.errors import ConversionError
from pocketrec.core.events import EVENT_NAMES
from pocketrec.core.heldout import HeldOut, StageData
from pocketrec.core.idmap import IdMap
from pocketrec.core.split import excluded_items, leave_one_out
from pocketrec.runtime.evaluation import evaluate_user_vectors, replay_user_vectors
from pocketrec.runtime.step import StepModel

PARITY_USERS = 200
SYNTHETIC_USERS = 32
SYNTHETIC_MAX_LEN = 20


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and what the export measured (``parity``: see
    ``pocketrec.converter.parity``; ``sizes``: bytes of each file)."""

    path: Path
    manifest: fmt.Manifest
    parity: dict[str, float]
    sizes: dict[str, int]


def build_bundle(
    source: StepSource,
    contents: BundleContents,
    out: Path,
    *,
    parity: StageData,
    valid: StageData | None,
    test: StageData | None,
    model_dtype: str = "float32",
    catalog_dtype: str = "float32",
    model_version: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> ExportResult:
    """The pipeline (module docstring). ``contents.tflite`` is ignored (it is converted here);
    ``parity``: the histories of the parity gate (targets ``< 0``: no accuracy report)."""
    num_event_types = len(contents.event_types)
    check_contract(source, contents.catalog, num_event_types)
    tflite = to_tflite(source, model_dtype)
    source_users = source.user_vectors(parity.items, parity.events)
    lite_users = replay_user_vectors(StepModel(tflite), parity.items, parity.events)
    report = parity_gate(source_users, lite_users, contents.catalog, parity.excluded, model_dtype)
    extra: dict[str, Any] = {"parity": report, **(metrics or {})}
    if len(parity) and (parity.targets >= 0).all():
        extra["accuracy"] = {
            "users": len(parity),
            "source": evaluate_user_vectors(
                contents.catalog, source_users, parity.targets, parity.excluded
            ),
            "bundle": evaluate_user_vectors(
                shipped_catalog(contents.catalog, catalog_dtype),
                lite_users,
                parity.targets,
                parity.excluded,
            ),
        }
    shipped = replace(contents, tflite=tflite)
    manifest = write_bundle(
        shipped,
        out,
        model_dtype=model_dtype,
        catalog_dtype=catalog_dtype,
        model_version=model_version,
        valid=valid,
        test=test,
        metrics=extra,
    )
    sizes = {name: entry.bytes for name, entry in manifest.files.items()}
    return ExportResult(path=out, manifest=manifest, parity=report, sizes=sizes)


def interest_model_source(model: InterestModel) -> StepSource:
    """The step source of a pocketrec model: its Keras step model, checked against its sequence
    model (the form it was trained in)."""
    return from_keras_step(
        model.step_model, model.config.state_dim, reference=partial(user_vectors, model)
    )


def convert_step_model(model: InterestModel, model_dtype: str = "float32") -> bytes:
    """The step model of a pocketrec model as a ``.tflite`` flatbuffer (no checks)."""
    return to_tflite(interest_model_source(model), model_dtype)


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
    """Convert the model directory ``model_path`` (``pocketrec train``) into the bundle ``out``;
    the parity gate runs on the first :data:`PARITY_USERS` validation histories. A refit model
    (``train_report.json``'s ``refit_epochs > 0``) was trained on the validation targets: its
    bundle gets no validation metrics, and the parity gate (and its accuracy figures) reads the
    test histories instead."""
    out = check_out(out, overwrite)
    trained = model_dir.load(Path(model_path))
    model = trained.model
    refit = int(trained.report.get("refit_epochs", 0)) > 0
    valid = trained.heldout.stage("valid")
    test = trained.heldout.stage("test")
    contents = BundleContents(
        tflite=b"",
        catalog=model.catalog(),
        initial_user=model.initial_user(),
        items=trained.items,
        titles=trained.titles,
        state_dim=model.config.state_dim,
        event_types=list(EVENT_NAMES),
    )
    keys = ("best_epoch", "seconds", "refit_epochs")
    training = {k: trained.report[k] for k in keys if k in trained.report}
    return build_bundle(
        interest_model_source(model),
        contents,
        out,
        parity=(test if refit else valid).subset(PARITY_USERS),
        valid=None if refit else valid,
        test=test if evaluate_test else None,
        model_dtype=model_dtype,
        catalog_dtype=catalog_dtype,
        model_version=model_version,
        metrics={"training": training},
    )


HistoryLike = Sequence[int] | npt.NDArray[np.integer] | tuple[Sequence[int], Sequence[int]]


def step_source(model: object, initial_state: npt.ArrayLike | int | None) -> StepSource:
    """The step source of a user's model (rules in the module docstrings of ``step_source`` and
    ``stepping``): a path is a SavedModel; a functional Keras model with three inputs is a step
    model, with one or two a sequence model; anything else needs a ``step`` method."""
    if isinstance(model, str | Path):
        return from_saved_model(Path(model), initial_state)
    if isinstance(model, keras.Model) and hasattr(model, "_run_through_graph"):
        if len(model.inputs) == 3:
            return from_keras_step(model, initial_state, None)
        if initial_state is not None:
            raise ConversionError(
                "a sequence model starts every recurrent layer from zeros: leave initial_state "
                "out (or pass the step model itself)"
            )
        stepped = step_form(model)
        return from_keras_step(
            stepped.step_model, stepped.state_dim, reference=stepped.user_vectors
        )
    return from_module(model, initial_state)


def _checked_catalog(catalog: npt.ArrayLike, item_ids: Sequence[str]) -> npt.NDArray[np.float32]:
    array = np.ascontiguousarray(np.asarray(catalog, dtype=np.float32))
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ConversionError(f"catalog must be float32 [N, D], got shape {list(array.shape)}")
    if array.shape[0] != len(item_ids):
        raise ConversionError(
            f"the catalog has {array.shape[0]} rows but item_ids has {len(item_ids)} ids: give "
            "one id per catalog row, in row order"
        )
    if not np.isfinite(array).all():
        raise ConversionError("the catalog holds NaN or infinite values")
    return array


def _synthetic(num_items: int, num_events: int, users: int, seed: int = 0) -> StageData:
    """Random histories (seeded): items uniform over the catalog, event codes uniform."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, SYNTHETIC_MAX_LEN + 1, size=users)
    items = [rng.integers(0, num_items, n).astype(np.int32) for n in lengths]
    events = [rng.integers(0, num_events, n).astype(np.int8) for n in lengths]
    return _without_targets(items, events)


def _without_targets(
    items: list[npt.NDArray[np.int32]], events: list[npt.NDArray[np.int8]]
) -> StageData:
    targets = np.full(len(items), -1, dtype=np.int64)
    excluded = [excluded_items(h, -1) for h in items]
    return StageData(items, events, targets, excluded)


def _histories(histories: Sequence[HistoryLike]) -> StageData:
    items, events = [], []
    for history in histories:
        if isinstance(history, tuple) and len(history) == 2:
            hist_items = np.asarray(history[0], dtype=np.int32)
            hist_events = np.asarray(history[1], dtype=np.int8)
        else:
            hist_items = np.asarray(history, dtype=np.int32)
            hist_events = np.zeros(len(hist_items), np.int8)
        items.append(hist_items)
        events.append(hist_events)
    return _without_targets(items, events)


def _check_histories(data: StageData, num_items: int, num_events: int) -> None:
    for k, (hist_items, hist_events) in enumerate(zip(data.items, data.events, strict=True)):
        if len(hist_items) < 1 or len(hist_items) != len(hist_events):
            raise ConversionError(
                f"history {k}: needs at least one event and as many event codes as items"
            )
        if hist_items.min() < 0 or hist_items.max() >= num_items:
            raise ConversionError(
                f"history {k}: item indices must be in [0, {num_items}) (catalog rows)"
            )
        if hist_events.min() < 0 or hist_events.max() >= num_events:
            raise ConversionError(
                f"history {k}: event codes must be in [0, {num_events}) (event_types)"
            )


def export(
    step_model: object,
    *,
    catalog: npt.ArrayLike,
    item_ids: Sequence[str],
    out: Path | str,
    initial_state: npt.ArrayLike | int | None = None,
    initial_user: npt.ArrayLike | None = None,
    event_types: Sequence[str] = EVENT_NAMES,
    validation: Interactions | StageData | Sequence[HistoryLike] | None = None,
    titles: Sequence[str | None] | None = None,
    catalog_dtype: str = "float32",
    model_dtype: str = "float32",
    model_version: int | None = None,
    parity_users: int = PARITY_USERS,
    overwrite: bool = False,
) -> ExportResult:
    """Export anyone's model as a verified bundle at ``out``.

    ``step_model``: a Keras step model ``[item, event, state] -> [state, user]``, a Keras
    sequence model (items ``[B, T]`` (and events) → user vectors ``[B, T, D]`` or ``[B, D]``,
    recurrent layers stepped automatically), a ``tf.Module`` with ``step(item, event, state)``,
    or a SavedModel directory with a signature ``step``. ``catalog``: float32 ``[N, D]``, row
    ``j`` is item ``item_ids[j]`` (a score is ``<user, catalog[j]>``). ``initial_state``: the
    state ``[H]`` of a user with no events (an int: zeros of that size; default: zeros of the
    model's declared size). ``initial_user``: the user vector ``[D]`` of a user with no events
    (default zeros: every score 0, items in catalog order). ``event_types``: event names the
    model understands, a prefix of ``pocketrec.core.events.EVENT_NAMES``. ``validation``: data
    whose dense item indices are the catalog rows (``Interactions``: leave-one-out validation
    histories for the parity gate and the accuracy report, validation and test metrics of the
    bundle as shipped), a ``StageData``, plain histories (item sequences or ``(items, events)``
    pairs) for the parity gate only, or ``None`` for random ones. Raises
    :class:`~pocketrec.core.errors.ConversionError` saying what to change.
    """
    out = check_out(Path(out), overwrite)
    ids = [str(i) for i in item_ids]
    array = _checked_catalog(catalog, ids)
    events = list(event_types)
    if not events or events != list(EVENT_NAMES)[: len(events)]:
        raise ConversionError(
            f"event_types must be a non-empty prefix of {list(EVENT_NAMES)} (the codes the "
            f"device sends), got {events}"
        )
    user0 = (
        np.zeros(array.shape[1], np.float32)
        if initial_user is None
        else np.asarray(initial_user, dtype=np.float32).reshape(-1)
    )
    if user0.shape != (array.shape[1],) or not np.isfinite(user0).all():
        raise ConversionError(
            f"initial_user must be a finite vector [{array.shape[1]}] (the catalog's width)"
        )
    valid = test = None
    if isinstance(validation, Interactions):
        if validation.items.ids != ids:
            raise ConversionError(
                "the validation data indexes its items differently from item_ids: catalog row "
                "j must be the data's item index j (pass item_ids=data.items.ids)"
            )
        held = HeldOut.from_split(leave_one_out(validation))
        valid, test = held.stage("valid"), held.stage("test")
        parity = valid.subset(parity_users)
    elif isinstance(validation, StageData):
        valid = validation
        parity = validation.subset(parity_users)
    elif validation is None:
        parity = _synthetic(len(ids), len(events), min(parity_users, SYNTHETIC_USERS))
    else:
        parity = _histories(validation).subset(parity_users)
    _check_histories(parity, len(ids), len(events))
    source = step_source(step_model, initial_state)
    contents = BundleContents(
        tflite=b"",
        catalog=array,
        initial_user=user0,
        items=IdMap(ids),
        titles=None if titles is None else list(titles),
        state_dim=source.state_dim,
        event_types=events,
    )
    return build_bundle(
        source,
        contents,
        out,
        parity=parity,
        valid=valid,
        test=test,
        model_dtype=model_dtype,
        catalog_dtype=catalog_dtype,
        model_version=model_version,
    )
