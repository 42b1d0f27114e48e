"""The LRU cell: the sequence form (chunked scan) against a plain complex-number reference and
against the per-event step form (chunk boundaries, padding, gradients, whole-history user
vectors), TFLite parity of the exported step model, and the config rules that come with the cell
choice."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

import keras
import tensorflow as tf

from pocketrec.converter import training
from pocketrec.converter.lru import CHUNK, LinearRecurrence
from pocketrec.converter.model import InterestModel, ModelConfig
from pocketrec.converter.pipeline import convert_step_model
from pocketrec.converter.training import user_vectors
from pocketrec.runtime.evaluation import replay_user_vectors
from pocketrec.runtime.step import StepModel

SMALL = {"embedding_dim": 8, "user_dim": 8, "hidden_dim": 6, "cell": "lru", "num_layers": 2}


def _recurrence(seed: int = 0, chunk: int = CHUNK) -> LinearRecurrence:
    layer = LinearRecurrence(5, r_min=0.3, seed=seed, chunk=chunk)
    layer.build((None, None, 4))
    rng = np.random.default_rng(seed)
    for weight in (layer.b_re, layer.b_im, layer.c_re, layer.c_im, layer.c_bias):
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    return layer


def _reference(layer: LinearRecurrence, x: np.ndarray) -> np.ndarray:
    """h_t = λ h_{t-1} + gamma (B x_t), y_t = Re(C h_t) + c, one complex step at a time."""
    w = {v.name: keras.ops.convert_to_numpy(v).astype(np.float64) for v in layer.weights}
    lam = np.exp(-np.exp(w["nu_log"]) + 1j * w["theta"])
    gamma = np.exp(w["gamma_log"])
    b = w["b_re"] + 1j * w["b_im"]
    c = w["c_re"] + 1j * w["c_im"]
    out = np.zeros(x.shape, dtype=np.float64)
    for row in range(x.shape[0]):
        h = np.zeros(layer.state_size, dtype=np.complex128)
        for t in range(x.shape[1]):
            h = lam * h + gamma * (x[row, t] @ b)
            out[row, t] = (h @ c).real + w["c_bias"]
    return out


def test_parallel_form_matches_the_complex_reference() -> None:
    layer = _recurrence()
    x = np.random.default_rng(1).normal(size=(3, 11, 4)).astype(np.float32)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, _reference(layer, x), rtol=1e-4, atol=1e-4)


def test_parallel_form_is_causal() -> None:
    layer = _recurrence(seed=2)
    x = np.random.default_rng(3).normal(size=(2, 9, 4)).astype(np.float32)
    changed = x.copy()
    changed[:, 5:] += 10.0
    a, b = (keras.ops.convert_to_numpy(layer(v)) for v in (x, changed))
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_state_stays_stable_for_any_parameters() -> None:
    layer = _recurrence(seed=4)
    layer.nu_log.assign(np.linspace(-30.0, 5.0, 5).astype(np.float32))  # |λ| from ~1 to ~0
    x = np.ones((1, 4), dtype=np.float32)
    zero = np.zeros((1, 10), dtype=np.float32)
    # One step from the zero state gives the input term u; with |λ| <= 1, after t steps of the
    # same input every state entry is at most t·|u| (no growth beyond linear).
    u = np.abs(keras.ops.convert_to_numpy(layer([x, zero]))[0, 4:])
    h = zero
    for _ in range(200):
        h = keras.ops.convert_to_numpy(layer([x, h]))[:, 4:]
    assert np.isfinite(h).all()
    assert np.all(np.abs(h[0]) <= 200 * u * (1 + 1e-4) + 1e-5)
    assert np.isfinite(keras.ops.convert_to_numpy(layer(np.ones((1, 200, 4), np.float32)))).all()


def _stepped(layer: LinearRecurrence, x: np.ndarray) -> np.ndarray:
    """The layer's own step mode run event by event from the zero state: ``[B, T, E]``."""
    e, h = x.shape[-1], np.zeros((x.shape[0], 2 * layer.state_size), dtype=np.float32)
    out = np.zeros_like(x)
    for t in range(x.shape[1]):
        both = keras.ops.convert_to_numpy(layer([x[:, t], h]))
        out[:, t], h = both[:, :e], both[:, e:]
    return out


@pytest.mark.parametrize("length", [1, 3, 4, 5, 8, 11])
def test_chunked_sequence_form_equals_stepping_event_by_event(length: int) -> None:
    # Chunks of at most 4 events: T < 4, T = 4, T a multiple of 4, T = 5 and 11 (chunks of 3 and
    # 4 with one padded position), T = 1.
    layer = _recurrence(seed=7, chunk=4)
    x = np.random.default_rng(length).normal(size=(3, length, 4)).astype(np.float32)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, _stepped(layer, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, _reference(layer, x), rtol=1e-4, atol=1e-4)


def test_chunk_size_does_not_change_the_sequence_form() -> None:
    x = np.random.default_rng(8).normal(size=(2, 37, 4)).astype(np.float32)
    outs = []
    for chunk in (1, 5, 36, 37, 1000):  # 1000: one chunk, the whole-history Toeplitz form
        outs.append(keras.ops.convert_to_numpy(_recurrence(seed=9, chunk=chunk)(x)))
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        LinearRecurrence(5, r_min=0.3, seed=0, chunk=0)


def test_gradients_through_the_chunked_scan_match_one_chunk() -> None:
    # Training compiles the sequence form with unknown B and T; the gradient flows through the
    # scan across chunks as it does through the single Toeplitz product.
    x = tf.constant(np.random.default_rng(10).normal(size=(2, 13, 4)).astype(np.float32))
    grads = []
    for chunk in (3, 1000):
        layer = _recurrence(seed=11, chunk=chunk)

        @tf.function(input_signature=[tf.TensorSpec((None, None, 4), tf.float32)])
        def loss_grads(x: tf.Tensor, layer: LinearRecurrence = layer) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(layer(x)))
            return tape.gradient(loss, layer.trainable_weights)

        grads.append([g.numpy() for g in loss_grads(x)])
    for chunked, whole in zip(*grads, strict=True):
        np.testing.assert_allclose(chunked, whole, rtol=1e-3, atol=1e-4)


def test_right_padding_as_in_training_leaves_real_positions_unchanged() -> None:
    model = InterestModel(ModelConfig(num_items=40, **SMALL))
    for block in model.blocks:
        block.recurrence.chunk = 4  # several chunks (the default 64 exceeds these lengths)
    rng = np.random.default_rng(12)
    lengths = [1, 4, 6, 9]
    items = np.zeros((4, 9), np.int32)  # right-padded with item 0, event 0, as training pads
    events = np.zeros((4, 9), np.int32)
    for row, n in enumerate(lengths):
        items[row, :n] = rng.integers(1, 40, size=n)
        events[row, :n] = rng.integers(0, 4, size=n)
    padded = keras.ops.convert_to_numpy(model.sequence_model([items, events], training=False))
    for row, n in enumerate(lengths):
        alone = model.sequence_model([items[row : row + 1, :n], events[row : row + 1, :n]])
        np.testing.assert_allclose(padded[row, :n], keras.ops.convert_to_numpy(alone)[0], atol=2e-5)


def test_user_vectors_equal_the_tflite_step_replay_across_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whole histories longer than a chunk (default 64), batched under a small position budget.
    monkeypatch.setattr(training, "EVAL_EVENTS", 200)
    model = InterestModel(ModelConfig(num_items=40, **SMALL))
    rng = np.random.default_rng(13)
    items = [rng.integers(0, 40, size=n).astype(np.int32) for n in (1, 63, 64, 65, 150, 3, 129)]
    events = [rng.integers(0, 4, size=len(i)).astype(np.int8) for i in items]
    lite = replay_user_vectors(StepModel(convert_step_model(model)), items, events)
    np.testing.assert_allclose(user_vectors(model, items, events), lite, atol=1e-4)


def test_step_model_matches_sequence_model_at_every_position() -> None:
    model = InterestModel(ModelConfig(num_items=40, **SMALL))
    rng = np.random.default_rng(5)
    items = rng.integers(0, 40, size=(2, 13)).astype(np.int32)
    events = rng.integers(0, 4, size=(2, 13)).astype(np.int32)
    sequence = keras.ops.convert_to_numpy(model.sequence_model([items, events], training=False))
    for row in range(2):
        state = np.zeros((1, model.config.state_dim), dtype=np.float32)
        for t in range(13):
            state, user = model.step_model([items[row : row + 1, t : t + 1],
                                            events[row : row + 1, t : t + 1], state])  # fmt: skip
            state = keras.ops.convert_to_numpy(state)
            user = keras.ops.convert_to_numpy(user)[0]
            np.testing.assert_allclose(user, sequence[row, t], atol=2e-5)
    assert model.config.state_dim == 2 * 6 * 2


@pytest.mark.parametrize("cell", ["lru", "gru"])
def test_tflite_step_model_matches_keras(cell: str) -> None:
    layers = 2 if cell == "lru" else 1
    model = InterestModel(
        ModelConfig(num_items=40, **{**SMALL, "cell": cell, "num_layers": layers})
    )
    step = StepModel(convert_step_model(model))
    assert step.state_dim == model.config.state_dim
    rng = np.random.default_rng(6)
    items = [rng.integers(0, 40, size=n).astype(np.int32) for n in (1, 4, 17)]
    events = [np.zeros(len(i), dtype=np.int8) for i in items]
    lite = replay_user_vectors(step, items, events)
    for row, (i, e) in enumerate(zip(items, events, strict=True)):
        seq = model.sequence_model([i[None], e[None].astype(np.int32)], training=False)
        np.testing.assert_allclose(lite[row], keras.ops.convert_to_numpy(seq)[0, -1], atol=1e-5)


def test_cold_start_user_ranks_by_the_item_bias() -> None:
    model = InterestModel(ModelConfig(num_items=40, **SMALL))
    model.out_bias.embeddings.assign(np.arange(40, dtype=np.float32)[:, None])
    scores = model.catalog() @ model.initial_user()
    assert np.argmax(scores) == 39
    np.testing.assert_array_equal(scores, np.arange(40, dtype=np.float32))


def test_config_rules_for_the_cell_choice() -> None:
    with pytest.raises(ValueError, match="user_dim == embedding_dim"):
        ModelConfig(num_items=5, cell="lru", embedding_dim=8, user_dim=4)
    with pytest.raises(ValueError, match="cell must be one of"):
        ModelConfig(num_items=5, cell="lstm")
    with pytest.raises(ValueError, match="one layer"):
        ModelConfig(num_items=5, cell="gru", num_layers=2)
    assert ModelConfig(num_items=5).num_layers == 2
    assert ModelConfig(num_items=5, cell="gru").num_layers == 1
    lru = ModelConfig(num_items=5, **SMALL)
    assert ModelConfig.from_json(lru.to_json()) == lru
    # A model directory written before the cell was a choice holds a GRU.
    old = json.loads(ModelConfig(num_items=5, cell="gru", num_layers=1).to_json())
    new_fields = ("cell", "num_layers", "r_min", "weight_decay", "plateau_decay", "init_std", "ema")
    for name in (*new_fields, "batching"):
        del old[name]
    loaded = ModelConfig.from_json(json.dumps(old))
    assert (loaded.cell, loaded.num_layers, loaded.init_std) == ("gru", 1, 0.0)
    assert (loaded.ema, loaded.batching) == (0.0, "users")
    with pytest.raises(ValueError, match="batching must be one of"):
        ModelConfig(num_items=5, batching="tokens")
    with pytest.raises(ValueError, match="ema must be in"):
        ModelConfig(num_items=5, ema=1.0)
    with pytest.raises(ValueError, match="init_std must be"):
        ModelConfig(num_items=5, init_std=-0.1)


def test_each_weight_matrix_gets_its_own_initial_values() -> None:
    # A seeded Keras initializer repeats its values on every call: B_re == B_im at init made the
    # imaginary input a copy of the real one.
    for std in (0.0, 0.02):
        layer = LinearRecurrence(6, r_min=0.0, seed=3, init_std=std)
        layer.build((None, None, 6))
        mats = [keras.ops.convert_to_numpy(w) for w in (layer.b_re, layer.b_im)]
        mats += [keras.ops.convert_to_numpy(w).T for w in (layer.c_re, layer.c_im)]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not np.allclose(mats[i], mats[j])
        if std > 0:
            assert max(np.abs(m).max() for m in mats) <= 2 * std


def test_the_compiled_user_vector_pass_does_not_keep_a_model_alive() -> None:
    model = InterestModel(ModelConfig(num_items=40, **SMALL))
    user_vectors(model, [np.arange(5, dtype=np.int32)], [np.zeros(5, np.int8)])
    alive = weakref.ref(model.sequence_model)
    del model
    gc.collect()
    assert alive() is None
