"""Bring your own model: ``pocketrec.converter.export`` on models pocketrec never trained.

Keras recurrent layers (GRU, LSTM, SimpleRNN, RNN over a custom cell, stacked) are stepped
automatically and proven by replaying random histories through the bundle's TFLite model against
the Keras sequence model; a tf.Module and a SavedModel go through the same pipeline; every contract
violation is a ConversionError that says what to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

import keras
import tensorflow as tf

from pocketrec.cli import main
from pocketrec.converter import ConversionError, export, step_form
from pocketrec.converter.parity import parity_gate
from pocketrec.core.heldout import StageData
from pocketrec.core.split import excluded_items
from pocketrec.runtime.bundle import open_bundle

N, E, D = 40, 8, 8
IDS = [f"item-{j}" for j in range(N)]


def _catalog(width: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, width)).astype(np.float32)


def _histories(count: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    items = [rng.integers(0, N, rng.integers(1, 25)).astype(np.int32) for _ in range(count)]
    events = [rng.integers(0, 6, len(h)).astype(np.int8) for h in items]
    return items, events


class PairCell(keras.layers.Layer):
    """A custom recurrent cell with two states (a fast and a slow average of tanh features)."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape: Any) -> None:
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.u = self.add_weight(shape=(self.units, self.units), name="u")

    def call(self, x: Any, states: Any) -> Any:
        fast, slow = states
        h = keras.ops.tanh(x @ self.w + fast @ self.u)
        slow = 0.9 * slow + 0.1 * h
        return h + slow, [h, slow]


def _sequence_model(kind: str) -> keras.Model:
    keras.utils.set_random_seed(1)
    items = keras.Input((None,), dtype="int32", name="items")
    events = keras.Input((None,), dtype="int32", name="events")
    x = keras.layers.Embedding(N, E)(items) + keras.layers.Embedding(6, E)(events)
    x = keras.layers.LayerNormalization()(x)
    if kind == "gru":
        h = keras.layers.GRU(12, return_sequences=True)(x)
    elif kind == "lstm":
        h = keras.layers.LSTM(12, return_sequences=True)(x)
    elif kind == "simple_rnn":
        h = keras.layers.SimpleRNN(12)(x)  # the last step only: [B, 12]
    elif kind == "custom_cell":
        h = keras.layers.RNN(PairCell(12), return_sequences=True)(x)
    else:  # stacked: a GRU into an LSTM, inside a nested Sequential
        inner = keras.Sequential(
            [keras.Input((None, E)), keras.layers.GRU(10, return_sequences=True)]
        )
        h = keras.layers.LSTM(12, return_sequences=True)(inner(x))
    return keras.Model([items, events], keras.layers.Dense(D)(h), name=kind)


@pytest.mark.parametrize("kind", ["gru", "lstm", "simple_rnn", "custom_cell", "stacked"])
def test_recurrent_layers_are_stepped_with_parity_on_random_histories(
    kind: str, tmp_path: Path
) -> None:
    model = _sequence_model(kind)
    items, events = _histories(30, seed=2)
    result = export(
        model,
        catalog=_catalog(),
        item_ids=IDS,
        out=tmp_path / "b",
        validation=list(zip(items, events, strict=True)),
    )
    assert result.parity["max_abs_diff"] <= 1e-4
    expected_state = {"gru": 12, "lstm": 24, "simple_rnn": 12, "custom_cell": 24, "stacked": 34}
    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.state_dim == expected_state[kind]
    # fresh random histories, replayed as the device does, against the Keras sequence model
    items, events = _histories(20, seed=3)
    keras_users = step_form(model).user_vectors(items, events)
    for hist_items, hist_events, keras_user in zip(items, events, keras_users, strict=True):
        _state, user = bundle.step.replay(hist_items, hist_events)
        np.testing.assert_allclose(user, keras_user, atol=1e-4)


def test_step_model_sees_the_event_type(tmp_path: Path) -> None:
    model = _sequence_model("gru")
    bundle = open_bundle(export(model, catalog=_catalog(), item_ids=IDS, out=tmp_path / "b").path)
    _s, as_view = bundle.step.replay([3, 4], [0, 0])
    _s, as_like = bundle.step.replay([3, 4], [0, 3])
    assert as_view is not None
    assert as_like is not None
    assert not np.allclose(as_view, as_like)


class Decay(tf.Module):
    """A hand-written step function: ``s' = 0.5 s + emb[item]``, user = ``s' W``."""

    def __init__(self, h: int = 6) -> None:
        rng = np.random.default_rng(4)
        self.emb = tf.Variable(rng.normal(size=(N, h)).astype(np.float32))
        self.w = tf.Variable(rng.normal(size=(h, D)).astype(np.float32))
        self.h = h

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, 1), tf.int32),
            tf.TensorSpec((1, 1), tf.int32),
            tf.TensorSpec((1, 6), tf.float32),
        ]
    )
    def step(self, item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        new = 0.5 * state + tf.gather(self.emb, item[:, 0])
        return {"state": new, "user": new @ self.w}


def _decay_reference(module: Decay, s0: np.ndarray, items: np.ndarray) -> np.ndarray:
    state = s0.astype(np.float32)
    for item in items:
        state = 0.5 * state + module.emb.numpy()[item]
    return state @ module.w.numpy()


def test_a_saved_model_with_a_nonzero_initial_state(tmp_path: Path) -> None:
    module = Decay()
    saved = tmp_path / "saved"
    tf.saved_model.save(module, str(saved), signatures={"step": module.step})
    s0 = np.linspace(-1, 1, 6).astype(np.float32)
    result = export(saved, catalog=_catalog(), item_ids=IDS, out=tmp_path / "b", initial_state=s0)
    assert result.parity["max_abs_diff"] <= 1e-4
    bundle = open_bundle(result.path)
    history = np.array([5, 1, 39, 5], np.int32)
    _state, user = bundle.step.replay(history, np.zeros(4, np.int8))
    np.testing.assert_allclose(user, _decay_reference(module, s0, history), atol=1e-4)


def test_a_tf_module_and_quantized_variants_report_accuracy(tmp_path: Path) -> None:
    items, events = _histories(40, seed=5)
    rng = np.random.default_rng(6)
    targets = rng.integers(0, N, len(items)).astype(np.int64)
    excluded = [excluded_items(h, int(t)) for h, t in zip(items, targets, strict=True)]
    data = StageData(items, events, targets, excluded)
    result = export(
        Decay(),
        catalog=_catalog(),
        item_ids=IDS,
        out=tmp_path / "b",
        initial_state=6,
        validation=data,
        model_dtype="float16",
        catalog_dtype="int8",
    )
    metrics = result.manifest.metrics
    assert metrics["accuracy"]["users"] == 40
    assert set(metrics["accuracy"]["source"]) == set(metrics["accuracy"]["bundle"])
    assert result.parity["top10_overlap"] >= 0.8
    assert 0 <= metrics["valid"]["hr@10"] <= 1
    assert open_bundle(result.path).manifest.catalog_dtype == "int8"


# ----------------------------------------------------------------------------- errors that help


class Scripted(tf.Module):
    """A step function whose outputs a test chooses."""

    def __init__(self, fn: Any) -> None:
        self.emb = tf.Variable(np.random.default_rng(7).normal(size=(N, 6)).astype(np.float32))
        self.fn = fn

    def step(self, item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> Any:
        return self.fn(self, item, event, state)


def _new(m: Scripted, item: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
    return 0.5 * state + tf.gather(m.emb, item[:, 0])


class Counter(tf.Module):
    """Keeps a counter of its own: a state that does not round-trip."""

    def __init__(self) -> None:
        self.count = tf.Variable(0.0)

    def step(self, item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> Any:
        self.count.assign_add(1.0)
        new = state + self.count
        return new, tf.tile(new[:, :1], (1, D))


@pytest.mark.parametrize(
    ("model", "catalog_width", "message"),
    [
        (Scripted(lambda m, i, e, s: tf.concat([s, s], 1)), D, "returned 1 output"),
        (
            Scripted(lambda m, i, e, s: (tf.concat([_new(m, i, s)] * 2, 1), _new(m, i, s))),
            6,
            r"returned a state float32 \[1, 12\] for a state float32 \[1, 6\].*concatenate",
        ),
        (
            Scripted(lambda m, i, e, s: (_new(m, i, s), tf.cast(_new(m, i, s), tf.float64))),
            6,
            r"returned a user vector float64 \[1, 6\]",
        ),
        (
            Scripted(lambda m, i, e, s: (_new(m, i, s), _new(m, i, s))),
            D,
            "the catalog has 8 columns but the user vector has 6",
        ),
        (
            Scripted(lambda m, i, e, s: {"new_state": s, "user": s}),
            6,
            "name its two outputs 'state' and 'user'",
        ),
        (
            Scripted(lambda m, i, e, s: (s, tf.math.log(s[:, :6] - 1.0))),
            6,
            "gives NaN or infinite values .* before any conversion",
        ),
        (Counter(), D, "the state does not round-trip"),
        (
            Scripted(lambda m, i, e, s: (s, tf.tile(tf.cast(i, tf.float32), (1, 6)) + s)),
            6,
            None,  # fine: the control case
        ),
    ],
)
def test_contract_violations_say_what_to_change(
    model: Any, catalog_width: int, message: str | None, tmp_path: Path
) -> None:
    call = lambda: export(  # noqa: E731
        model, catalog=_catalog(catalog_width), item_ids=IDS, out=tmp_path / "b", initial_state=6
    )
    if message is None:
        assert call().parity["max_abs_diff"] <= 1e-4
        return
    with pytest.raises(ConversionError, match=message):
        call()
    assert not (tmp_path / "b").exists()


def test_an_op_without_a_builtin_kernel_is_named_with_the_fix(tmp_path: Path) -> None:
    def inverse(m: Scripted, i: tf.Tensor, e: tf.Tensor, s: tf.Tensor) -> Any:
        new = _new(m, i, s)
        square = tf.eye(6) + 0.1 * tf.transpose(new) @ new
        return new, tf.linalg.inv(square)[:1]

    with pytest.raises(ConversionError, match=r"no built-in kernel for: MatrixInverse.*Flex"):
        export(
            Scripted(inverse),
            catalog=_catalog(6),
            item_ids=IDS,
            out=tmp_path / "b",
            initial_state=6,
        )


def test_non_finite_outputs_after_conversion_are_refused() -> None:
    """What the gate sees when a conversion lost the weights (the Keras 3 trap): the source's
    vectors finite, the TFLite replay's NaN. (Exporting through ExportArchive tracks the
    variables an endpoint uses, so no model here reproduces the trap itself.)"""
    source = np.ones((3, D), np.float32)
    lite = source.copy()
    lite[1, 2] = np.nan
    excluded = [np.zeros(0, np.int64)] * 3
    with pytest.raises(ConversionError, match=r"NaN or infinite user vectors for 1 of 3.*Keras 3"):
        parity_gate(source, lite, _catalog(), excluded, "float16")


def test_a_layer_that_mixes_time_steps_fails_the_parity_gate(tmp_path: Path) -> None:
    items = keras.Input((None,), dtype="int32")
    x = keras.layers.GRU(8, return_sequences=True)(keras.layers.Embedding(N, E)(items))
    user = keras.layers.Conv1D(D, 3, padding="causal")(x)  # reads the two events before
    model = keras.Model(items, user)
    with pytest.raises(ConversionError, match=r"parity check failed.*mixes time steps"):
        export(model, catalog=_catalog(), item_ids=IDS, out=tmp_path / "b")


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            lambda: keras.layers.GRU(8, return_sequences=True, go_backwards=True),
            "go_backwards=True",
        ),
        (
            lambda: keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
            "Bidirectional",
        ),
        (lambda: keras.layers.Dense(8), "has no recurrent layer"),
    ],
)
def test_sequence_models_that_cannot_be_stepped(layer: Any, message: str) -> None:
    items = keras.Input((None,), dtype="int32")
    model = keras.Model(items, layer()(keras.layers.Embedding(N, E)(items)))
    with pytest.raises(ConversionError, match=message):
        step_form(model)


def test_saved_model_with_other_input_names(tmp_path: Path) -> None:
    module = tf.Module()
    module.v = tf.Variable(1.0)
    spec = [tf.TensorSpec((1, 1), tf.int32), tf.TensorSpec((1, 6), tf.float32)]
    module.f = tf.function(lambda x, h: {"state": h * module.v, "user": h}, input_signature=spec)
    tf.saved_model.save(module, str(tmp_path / "s"), signatures={"step": module.f})
    with pytest.raises(ConversionError, match="name its inputs 'item', 'event' and 'state'"):
        export(tmp_path / "s", catalog=_catalog(6), item_ids=IDS, out=tmp_path / "b")


def test_arguments_are_checked_before_any_conversion(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(ConversionError, match="40 rows but item_ids has 39"):
        export(Decay(), catalog=_catalog(), item_ids=IDS[:-1], out=out, initial_state=6)
    with pytest.raises(ConversionError, match="event_types must be a non-empty prefix"):
        export(Decay(), catalog=_catalog(), item_ids=IDS, out=out, event_types=["click"])
    with pytest.raises(ConversionError, match=r"item indices must be in \[0, 40\)"):
        export(Decay(), catalog=_catalog(), item_ids=IDS, out=out, validation=[[1, 40]])
    with pytest.raises(ConversionError, match="pass initial_state"):
        export(Decay(), catalog=_catalog(), item_ids=IDS, out=out)
    assert not out.exists()


def test_cli_converts_a_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = Decay()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"step": module.step})
    np.save(tmp_path / "catalog.npy", _catalog())
    (tmp_path / "items.json").write_text(json.dumps(IDS))
    np.save(tmp_path / "s0.npy", np.full(6, 0.25, np.float32))
    args = ["convert", "--saved-model", str(tmp_path / "saved"), "--catalog",
            str(tmp_path / "catalog.npy"), "--items", str(tmp_path / "items.json"),
            "--initial-state", str(tmp_path / "s0.npy"), "--event-types", "2",
            "--out", str(tmp_path / "b"), "--model-version", "3"]  # fmt: skip
    assert main(args) == 0
    assert "parity vs Keras: users=32" in capsys.readouterr().out
    bundle = open_bundle(tmp_path / "b")
    assert (bundle.manifest.model_version, bundle.manifest.event_types) == (3, ["view", "click"])
    history = np.array([2, 7], np.int32)
    _state, user = bundle.step.replay(history, np.ones(2, np.int8))
    np.testing.assert_allclose(user, _decay_reference(module, np.full(6, 0.25), history), atol=1e-4)
    assert main(["convert", "--out", str(tmp_path / "c")]) == 2
    assert "give a model directory or --saved-model DIR" in capsys.readouterr().err
    assert main(["convert", "--saved-model", str(tmp_path / "saved"), "--out", "x"]) == 2
    assert "--saved-model needs --catalog" in capsys.readouterr().err
