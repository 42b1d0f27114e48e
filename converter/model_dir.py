"""The trained-model directory that ``pocketrec train`` writes and ``pocketrec convert`` reads.

Contents: ``config.json`` (:class:`ModelConfig`), ``model.weights.h5`` (Keras weights),
``items.json`` (the item ``IdMap``), ``item_titles.json`` (titles in index order, when the data
has them), ``heldout.npz`` (validation and test histories for the parity gate and the bundle's
metrics, see ``pocketrec.core.heldout``) and ``train_report.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketrec.converter.model import InterestModel, ModelConfig
from pocketrec.converter.training import TrainingReport
from pocketrec.core.dataset import Interactions
from pocketrec.core.heldout import HeldOut
from pocketrec.core.idmap import IdMap
from pocketrec.core.split import Split

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
ITEMS = "items.json"
TITLES = "item_titles.json"
HELDOUT = "heldout.npz"
REPORT = "train_report.json"


@dataclass(frozen=True)
class TrainedModel:
    """A model directory loaded back."""

    model: InterestModel
    items: IdMap
    titles: list[str | None] | None
    heldout: HeldOut
    report: dict[str, Any]


def titles_of(data: Interactions) -> list[str | None] | None:
    """Item titles in index order, or ``None`` when the data has none."""
    if not data.item_titles:
        return None
    return [data.item_titles.get(i) for i in range(data.num_items)]


def save(
    out: Path, model: InterestModel, data: Interactions, split: Split, report: TrainingReport
) -> None:
    """Write a model directory (created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(model.config.to_json(), encoding="utf-8")
    model.save_weights(out / WEIGHTS)
    data.items.save(out / ITEMS)
    titles = titles_of(data)
    if titles is not None:
        (out / TITLES).write_text(json.dumps(titles, ensure_ascii=False), encoding="utf-8")
    HeldOut.from_split(split).save(out / HELDOUT)
    summary = {"data": data.summary(), "split": split.summary(), **dataclasses.asdict(report)}
    (out / REPORT).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def load(path: Path) -> TrainedModel:
    """Read a model directory written by :func:`save`."""
    path = Path(path)
    missing = [n for n in (CONFIG, WEIGHTS, ITEMS, HELDOUT) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a trained-model directory: missing {missing}")
    model = InterestModel(ModelConfig.from_json((path / CONFIG).read_text(encoding="utf-8")))
    model.load_weights(path / WEIGHTS)
    titles = None
    if (path / TITLES).is_file():
        titles = json.loads((path / TITLES).read_text(encoding="utf-8"))
    report = {}
    if (path / REPORT).is_file():
        report = json.loads((path / REPORT).read_text(encoding="utf-8"))
    return TrainedModel(
        model=model,
        items=IdMap.load(path / ITEMS),
        titles=titles,
        heldout=HeldOut.load(path / HELDOUT),
        report=report,
    )
