"""SASRec, the same-loop transformer reference: causal, trained by ``fit``, better than
popularity on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

import keras

from pocketrec.converter.model import ModelConfig
from pocketrec.converter.sasrec import SASRec
from pocketrec.converter.training import evaluate_model, fit
from pocketrec.core import leave_one_out, synthetic
from pocketrec.core.heldout import HeldOut
from pocketrec.core.metrics import popularity_baseline

SMALL = {"embedding_dim": 16, "user_dim": 16, "max_len": 12}


def test_outputs_are_causal_and_end_with_the_bias_column() -> None:
    model = SASRec(ModelConfig(num_items=30, **SMALL))
    rng = np.random.default_rng(0)
    items = rng.integers(0, 30, size=(2, 15)).astype(np.int32)  # longer than max_len
    changed = items.copy()
    changed[:, 9:] = (changed[:, 9:] + 1) % 30
    zeros = np.zeros_like(items)
    a, b = (
        keras.ops.convert_to_numpy(model.sequence_model([x, zeros], training=False))
        for x in (items, changed)
    )
    assert a.shape == (2, 15, 17)
    np.testing.assert_allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not np.allclose(a[:, 9:], b[:, 9:])
    np.testing.assert_array_equal(a[..., -1], 1.0)
    assert model.catalog().shape == (30, 17)


def test_attention_projections_start_different_and_reproducible() -> None:
    def kernels() -> list[np.ndarray]:
        block = SASRec(ModelConfig(num_items=30, **SMALL)).blocks[0].attention
        layers = (block.query_dense, block.key_dense, block.value_dense)
        return [keras.ops.convert_to_numpy(layer.kernel) for layer in layers]

    first, second = kernels(), kernels()
    assert not np.allclose(first[0], first[1])
    assert not np.allclose(first[0], first[2])
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_trains_it_past_popularity() -> None:
    data = synthetic.generate(num_users=800, num_items=120, seed=5)
    split = leave_one_out(data)
    # No refit: the model kept is the best validated epoch's (the refit: test_training_refit.py).
    config = ModelConfig(
        num_items=data.num_items, **SMALL, max_epochs=8, learning_rate=5e-3, refit_share=1.0
    )
    model, report = fit(SASRec(config), split, show_progress=False)
    assert report.best_epoch >= 1
    valid = evaluate_model(model, HeldOut.from_split(split).stage("valid"))
    assert valid["ndcg@10"] == pytest.approx(report.best_valid["ndcg@10"], abs=1e-6)
    pop = popularity_baseline(split, stage="valid")
    assert valid["hr@10"] > pop["hr@10"]
