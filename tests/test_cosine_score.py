"""The cosine score (``cosine_temperature > 0``): ``cos(z, e_j) / τ + b_j`` as one inner product
of scaled user and catalog vectors, through training, the step model and the exported bundle."""

from __future__ import annotations

from pathlib import Path

import hypothesis.extra.numpy as hnp
import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.converter import model_dir
from pocketrec.converter.config import ModelConfig
from pocketrec.converter.model import InterestModel, unit_rows
from pocketrec.converter.pipeline import export_bundle
from pocketrec.converter.sasrec import SASRec
from pocketrec.converter.training import evaluate_model, train, user_vectors
from pocketrec.core import synthetic
from pocketrec.core.split import leave_one_out
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.evaluation import replay_user_vectors

TAU = 0.1
SMALL = {"embedding_dim": 16, "hidden_dim": 32, "user_dim": 16}


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
        elements=st.floats(-1e3, 1e3, width=32),
    )
)
def test_unit_rows_matches_numpy(x: np.ndarray) -> None:
    got = keras.ops.convert_to_numpy(unit_rows(x)).astype(np.float64)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    clear = norms >= 1e-3  # far above the epsilon that keeps a zero row at zero
    np.testing.assert_allclose(got[clear], x[clear] / norms[clear, None], atol=1e-5)
    assert np.all(np.isfinite(got))
    assert np.all(np.linalg.norm(got, axis=1) <= 1 + 1e-5)  # tiny rows shrink, never blow up
    assert np.all(got[norms == 0] == 0)  # a zero row stays zero, no NaN


def test_negative_temperature_is_refused() -> None:
    with pytest.raises(ValueError, match="cosine_temperature must be >= 0"):
        ModelConfig(num_items=10, cosine_temperature=-0.1)


def test_configs_written_before_load_with_the_raw_inner_product() -> None:
    text = ModelConfig(num_items=10).to_json().replace('"cosine_temperature": 0.0,', "")
    assert "cosine_temperature" not in text
    assert ModelConfig.from_json(text).cosine_temperature == 0.0


@pytest.mark.parametrize("cell", ["lru", "gru"])
def test_user_and_catalog_vectors_are_scaled(cell: str) -> None:
    model = InterestModel(ModelConfig(num_items=30, cell=cell, cosine_temperature=TAU, **SMALL))
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 30, n).astype(np.int32) for n in (1, 4, 9)]
    events = [np.zeros(len(h), np.int8) for h in items]
    users = user_vectors(model, items, events)
    np.testing.assert_allclose(np.linalg.norm(users[:, :-1], axis=1), 1 / TAU, rtol=1e-5)
    np.testing.assert_array_equal(users[:, -1], 1.0)
    catalog = model.catalog()
    np.testing.assert_allclose(np.linalg.norm(catalog[:, :-1], axis=1), 1.0, rtol=1e-5)
    raw = keras.ops.convert_to_numpy(model.out_emb.embeddings)
    cosine = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(catalog[:, :-1], cosine, atol=1e-6)
    if cell == "gru":  # the zero state's projection (its bias, zero at the start), scaled
        model.project.bias.assign(np.linspace(-1.0, 1.0, 16, dtype=np.float32))
        initial = model.initial_user()
        assert np.linalg.norm(initial[:-1]) == pytest.approx(1 / TAU, rel=1e-5)


def test_sasrec_peer_scores_the_same_way() -> None:
    peer = SASRec(ModelConfig(num_items=30, cosine_temperature=TAU, max_len=8, **SMALL))
    items = np.array([[1, 2, 3, 4]], np.int32)
    users = keras.ops.convert_to_numpy(peer.sequence_model([items, np.zeros_like(items)]))
    np.testing.assert_allclose(np.linalg.norm(users[0, :, :-1], axis=1), 1 / TAU, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(peer.catalog()[:, :-1], axis=1), 1.0, rtol=1e-5)


def test_trained_cosine_model_exports_and_replays_on_device(tmp_path: Path) -> None:
    data = synthetic.generate(num_users=600, num_items=80, seed=5)
    split = leave_one_out(data)
    config = ModelConfig(
        num_items=data.num_items,
        cosine_temperature=TAU,
        max_epochs=6,
        patience=3,
        learning_rate=5e-3,
        **SMALL,
    )
    model, report = train(split, config, show_progress=False)
    model_dir.save(tmp_path / "model", model, data, split, report)
    export_bundle(tmp_path / "model", tmp_path / "bundle", model_version=1)  # parity-gated
    bundle = open_bundle(tmp_path / "bundle")
    loaded = model_dir.load(tmp_path / "model")
    assert loaded.model.config.cosine_temperature == TAU
    np.testing.assert_array_equal(bundle.catalog, loaded.model.catalog())
    test = loaded.heldout.stage("test")
    device = replay_user_vectors(bundle.step, test.items, test.events)
    np.testing.assert_allclose(np.linalg.norm(device[:, :-1], axis=1), 1 / TAU, rtol=1e-4)
    keras_metrics = evaluate_model(loaded.model, test)
    for key in ("hr@10", "ndcg@10"):
        assert bundle.manifest.metrics["test"][key] == pytest.approx(keras_metrics[key], abs=1e-3)


def test_training_loss_ranks_with_the_catalog_the_bundle_ships() -> None:
    """The loss's logits are the exported scores: ``users @ catalog().T`` (unit item rows)."""
    import tensorflow as tf

    from pocketrec.converter.training import _loss_fn

    model = InterestModel(ModelConfig(num_items=30, cosine_temperature=TAU, **SMALL))
    model.out_bias.embeddings.assign(np.linspace(-0.5, 0.5, 30, dtype=np.float32)[:, None])
    rng = np.random.default_rng(1)
    users = unit_rows(rng.normal(size=(5, 16)).astype(np.float32)) / TAU
    users = np.concatenate([keras.ops.convert_to_numpy(users), np.ones((5, 1), np.float32)], 1)
    targets = np.array([0, 3, 7, 11, 29], np.int32)
    loss = _loss_fn(model, "full", 1000, np.ones(30), mask_history=False)
    got = float(loss(tf.constant(users), tf.constant(targets), None, None))
    logits = users @ model.catalog().T
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert got == pytest.approx(-log_p[np.arange(5), targets].mean(), rel=1e-5)
