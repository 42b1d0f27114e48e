"""The examples in ``examples/`` run (with few epochs) and do what they claim: the GRU4Rec bundle's
``pocketrec evaluate`` metrics equal the Keras model's own full-ranking metrics on the same users,
and the two-tower model with an LSTM cell becomes a bundle that serves."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorflow", reason="the examples need the `convert` extra")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")


def test_gru4rec_bundle_evaluates_as_the_keras_model_does(
    shared_data: Path, tmp_path: Path
) -> None:
    data = shared_data / "ml-100k"
    summary = _example("gru4rec_ml100k")["main"](data, tmp_path / "bundle", epochs=2)
    assert summary["parity"]["max_abs_diff"] <= 1e-4
    assert len(summary["recommended"]) == 5
    run = subprocess.run(
        [sys.executable, "-m", "pocketrec", "evaluate", str(tmp_path / "bundle"),
         "--data", str(data), "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    replayed = json.loads(run.stdout)
    keras_metrics = summary["keras_test"]
    assert replayed["users"] == 943
    for key in ("hr@5", "hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr", "coverage@10"):
        assert replayed[key] == pytest.approx(keras_metrics[key], abs=1e-6), key
    assert keras_metrics["hr@10"] > 0.02  # better than chance (10 of 1,682 items: 0.006)


def test_two_tower_with_an_lstm_cell_becomes_a_bundle(tmp_path: Path) -> None:
    summary = _example("lstm_two_tower")["main"](tmp_path / "bundle", epochs=3)
    manifest = summary["manifest"]
    assert manifest.state_dim == 64  # the LSTM cell's h and c
    assert manifest.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert len(summary["recommended"]) == 5
    assert manifest.metrics["test"]["hr@10"] > 10 / 200  # better than chance


def test_examples_are_not_installed_as_a_package() -> None:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('examples') is not None)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
