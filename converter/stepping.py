"""A Keras sequence model turned into its step form, automatically.

A *sequence model* maps a batch of histories to user vectors: inputs ``items`` ``[B, T]`` (and
optionally ``events`` ``[B, T]``), output ``[B, T, D]`` (a vector after every event) or ``[B, D]``
(after the last one). It can be stepped when it is built with the functional API or
``Sequential`` (nested functional models included) and every layer that carries information
across time is a recurrent layer: ``keras.layers.GRU``, ``LSTM``, ``SimpleRNN`` or
``keras.layers.RNN`` over any cell (a layer with ``state_size`` and ``call(x, states) -> (y,
new_states)``). Every other layer must work on each time step alone (embeddings, dense layers,
normalisation, dropout, element-wise ops) and is run on a sequence of length 1.

The step model takes ``item`` ``[1, 1]``, ``event`` ``[1, 1]`` and ``state`` ``[1, H]``, where the
state is the concatenation of every recurrent layer's cell states (in graph order; an LSTM has
two, ``h`` and ``c``), and returns the new state and the user vector ``[1, D]``; every RNN starts
from zeros, so the initial state is zeros ``[H]``. The recurrent layers' cells are called directly
and share their weights with the sequence model. Whether the step form computes what the sequence
model computes is proven by the parity gate (:mod:`pocketrec.converter.parity`), which compares
with the sequence model itself (:meth:`SteppedModel.user_vectors`).

Not supported, each refused with a :class:`ConversionError`: ``go_backwards``, ``return_state``,
``stateful``, ``Bidirectional``, nested state sizes, an RNN layer called more than once, and
subclassed models (write the step function yourself then: ``pocketrec.converter.step_source``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from pocketrec.core.errors import ConversionError

EVAL_BATCH = 256


@dataclass(frozen=True)
class SteppedModel:
    """The step model ``[item, event, state] -> [state, user]`` built on the sequence model's
    layers, its state size ``H`` and the sequence model itself."""

    step_model: keras.Model
    state_dim: int
    sequence_model: keras.Model

    def user_vectors(
        self, items: Sequence[npt.NDArray[np.int32]], events: Sequence[npt.NDArray[np.int8]]
    ) -> npt.NDArray[np.float32]:
        """The sequence model's user vectors ``[U, D]`` after each whole history (inference
        mode; histories of one length are batched, so no padding is ever seen)."""
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, hist in enumerate(items):
            if len(hist) < 1:
                raise ValueError("every history must have at least one event")
            by_length[len(hist)].append(index)
        model = self.sequence_model
        dtypes = [keras.backend.standardize_dtype(x.dtype) for x in model.inputs]
        # one graph for every batch shape: run eagerly, a recurrent layer loops in Python
        run = tf.function(
            lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False),
            input_signature=[tf.TensorSpec((None, None), d) for d in dtypes],
            autograph=False,
        )
        out: list[npt.NDArray[np.float32] | None] = [None] * len(items)
        for rows in by_length.values():
            for start in range(0, len(rows), EVAL_BATCH):
                chunk = rows[start : start + EVAL_BATCH]
                both: list[npt.NDArray[Any]] = [
                    np.stack([items[r] for r in chunk]),
                    np.stack([events[r] for r in chunk]),
                ]
                users = run(*[a.astype(d) for a, d in zip(both, dtypes, strict=False)]).numpy()
                last = users[:, -1, :] if users.ndim == 3 else users
                for r, user in zip(chunk, last, strict=True):
                    out[r] = user
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]  # every row is filled


def _graph(model: keras.Model) -> Any:
    """The functional graph of ``model`` (a ``Sequential`` holds one once built)."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ConversionError(
                f"Sequential model {model.name!r} is not built: start it with keras.Input"
            )
        return graph
    if not hasattr(model, "_run_through_graph"):
        raise ConversionError(
            f"{type(model).__name__} {model.name!r} is a subclassed model: its step form cannot be "
            "derived. Build it with the functional API or Sequential, or write the step function "
            "(item, event, state) -> (state, user) yourself"
        )
    return model


def _recurrent_layers(model: keras.Model) -> list[keras.layers.RNN]:
    """Every RNN layer of ``model`` and its nested models, in graph order, checked."""
    found: list[keras.layers.RNN] = []
    for layer in _graph(model).operations:
        if isinstance(layer, keras.layers.Bidirectional):
            raise ConversionError(
                f"layer {layer.name!r} is Bidirectional: it reads the future of each event and "
                "cannot be run one event at a time; use a forward recurrent layer"
            )
        if isinstance(layer, keras.Model):
            found += _recurrent_layers(layer)
        elif isinstance(layer, keras.layers.RNN):
            for flag in ("go_backwards", "return_state", "stateful"):
                if getattr(layer, flag, False):
                    raise ConversionError(
                        f"recurrent layer {layer.name!r} has {flag}=True, which a step model "
                        f"cannot reproduce: build it with {flag}=False"
                    )
            size = layer.cell.state_size
            sizes = list(size) if isinstance(size, list | tuple) else [size]
            if any(not isinstance(s, int) for s in sizes):
                raise ConversionError(
                    f"recurrent layer {layer.name!r}: its cell has a nested state_size; give "
                    "it one integer per state"
                )
            if layer in found:
                raise ConversionError(
                    f"recurrent layer {layer.name!r} is called more than once; a step model "
                    "needs one state per call: use separate layers"
                )
            found.append(layer)
    return found


def _state_sizes(layer: keras.layers.RNN) -> list[int]:
    size = layer.cell.state_size
    return [int(s) for s in size] if isinstance(size, list | tuple) else [int(size)]


def step_form(sequence_model: keras.Model) -> SteppedModel:
    """The step form of ``sequence_model`` (see the module docstring)."""
    inputs = getattr(sequence_model, "inputs", None) or []
    if len(inputs) not in (1, 2):
        raise ConversionError(
            f"a sequence model takes items [B, T] (and events [B, T]); {sequence_model.name!r} "
            f"takes {len(inputs)} inputs"
        )
    layers = _recurrent_layers(sequence_model)
    offsets: dict[int, list[tuple[int, int]]] = {}
    total = 0
    for layer in layers:
        spans = []
        for size in _state_sizes(layer):
            spans.append((total, total + size))
            total += size
        offsets[id(layer)] = spans
    if total == 0:
        raise ConversionError(
            f"{sequence_model.name!r} has no recurrent layer, so it has no state to carry from "
            "one event to the next; use keras.layers.GRU, LSTM, SimpleRNN or RNN(cell)"
        )
    item = keras.Input((1,), batch_size=1, dtype="int32", name="item")
    event = keras.Input((1,), batch_size=1, dtype="int32", name="event")
    state = keras.Input((total,), batch_size=1, dtype="float32", name="state")
    new_states: dict[int, list[Any]] = {}

    def cell_step(layer: keras.layers.RNN) -> Callable[..., Any]:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            if args or kwargs.get("initial_state") is not None:
                raise ConversionError(
                    f"recurrent layer {layer.name!r} is given an initial state; a step model "
                    "starts every RNN from zeros"
                )
            states = [state[:, a:b] for a, b in offsets[id(layer)]]
            kwargs = {"training": False} if layer.cell._call_has_training_arg else {}
            y, new = layer.cell(x[:, 0, :], states, **kwargs)
            new_states[id(layer)] = list(new) if isinstance(new, list | tuple) else [new]
            return keras.ops.expand_dims(y, 1) if layer.return_sequences else y

        return call

    def run(model: keras.Model, args: list[Any]) -> Any:
        graph = _graph(model)
        return graph._run_through_graph(args, operation_fn=operation)

    def operation(op: Any) -> Any:
        if isinstance(op, keras.layers.RNN):
            return cell_step(op)
        if isinstance(op, keras.Model):
            return partial(nested, op)
        return op

    def nested(model: keras.Model, x: Any, *_args: Any, **_kwargs: Any) -> Any:
        return run(model, list(x) if isinstance(x, list | tuple) else [x])

    fed = (item, event)[: len(inputs)]
    casts = [keras.ops.cast(t, x.dtype) for t, x in zip(fed, inputs, strict=True)]
    user = run(sequence_model, casts)
    if isinstance(user, list | tuple | dict):
        raise ConversionError(
            f"{sequence_model.name!r} has several outputs; a sequence model has one, the user "
            "vectors [B, T, D] or [B, D]"
        )
    if len(user.shape) == 3:
        user = user[:, 0, :]
    ordered = [s for layer in layers for s in new_states[id(layer)]]
    new_state = ordered[0] if len(ordered) == 1 else keras.ops.concatenate(ordered, axis=-1)
    step = keras.Model([item, event, state], [new_state, user], name="step")
    return SteppedModel(step_model=step, state_dim=total, sequence_model=sequence_model)
