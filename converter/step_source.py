"""A step function in one form, whatever the user handed in: what the TFLite conversion, the
contract checks and the parity gate take.

The step contract (the public interface of a bundle's ``step.tflite``)::

    step(item int32 [1, 1], event int32 [1, 1], state float32 [1, H])
        -> (state float32 [1, H], user float32 [1, D])

where ``item`` indexes the catalog's rows, ``event`` is an event code (``pocketrec.core.events``),
``state`` carries everything the model remembers from one event to the next, and ``user`` is the
vector whose inner product with a catalog row ``[D]`` scores that item.

Accepted sources: a Keras model with three inputs ``[item, event, state]`` and two outputs
``[state, user]`` (or a dict with those keys); a ``tf.Module`` with a ``step(item, event, state)``
method (or ``__call__``); the path of a SavedModel with a signature ``step`` (inputs named
``item``, ``event``, ``state``; outputs ``state``, ``user``). Sequence models are turned into this
form by ``pocketrec.converter.stepping``.

A user whose model starts from a state ``s0 != 0`` gets it folded into the exported function:
the bundle's state is ``state - s0`` (the runtime starts every user from zeros, bundle format 1),
so the device computes the same user vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from pocketrec.core.errors import ConversionError

Histories = tuple[Sequence[npt.NDArray[np.int32]], Sequence[npt.NDArray[np.int8]]]
Reference = Callable[
    [Sequence[npt.NDArray[np.int32]], Sequence[npt.NDArray[np.int8]]], npt.NDArray[np.float32]
]
"""``reference(items, events)``: the source model's own user vectors ``[U, D]`` float32 after each
whole history (what the parity gate compares the TFLite replay with)."""

StepFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

CONTRACT = (
    "step(item int32 [1, 1], event int32 [1, 1], state float32 [1, H]) -> "
    "(state float32 [1, H], user float32 [1, D])"
)


@dataclass(frozen=True)
class StepSource:
    """A step function ``fn(item, event, state) -> (state, user)`` over TF tensors (``state``
    float32 ``[1, H]`` in the user's own coordinates), ``tracked``: what owns its variables
    (exported with it), ``initial_state`` float32 ``[H]``, and ``reference``: the source model's
    user vectors, or ``None`` to step ``fn`` itself event by event."""

    fn: StepFn
    tracked: Any
    initial_state: npt.NDArray[np.float32]
    reference: Reference | None = None
    description: str = "the step model"

    @property
    def state_dim(self) -> int:
        return int(self.initial_state.shape[0])

    def signature(self) -> list[tf.TensorSpec]:
        """The input signature of the contract with this source's ``H``."""
        return [
            tf.TensorSpec((1, 1), tf.int32, name="item"),
            tf.TensorSpec((1, 1), tf.int32, name="event"),
            tf.TensorSpec((1, self.state_dim), tf.float32, name="state"),
        ]

    def endpoint(self) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
        """The function exported as the bundle's ``step``: the bundle's state is the offset from
        ``initial_state`` (all zeros for most models, then the offset is left out)."""
        fn, offset = self.fn, self.initial_state
        shifted = bool(np.any(offset != 0))

        def step(item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
            if shifted:
                state = state + tf.constant(offset[None, :])
            new_state, user = fn(item, event, state)
            if shifted:
                new_state = new_state - tf.constant(offset[None, :])
            return {"state": new_state, "user": user}

        return step

    def stepped_reference(
        self, items: Sequence[npt.NDArray[np.int32]], events: Sequence[npt.NDArray[np.int8]]
    ) -> npt.NDArray[np.float32]:
        """User vectors ``[U, D]`` from running ``fn`` (compiled, in TensorFlow) event by event
        from ``initial_state`` over each history: the source model's own answer."""
        compiled = tf.function(self.fn, input_signature=self.signature())
        users = []
        for hist_items, hist_events in zip(items, events, strict=True):
            state = tf.constant(self.initial_state[None, :])
            user = None
            for item, event in zip(hist_items.tolist(), hist_events.tolist(), strict=True):
                state, user = compiled(
                    tf.constant([[item]], tf.int32), tf.constant([[event]], tf.int32), state
                )
            if user is None:
                raise ValueError("every history must have at least one event")
            users.append(np.asarray(user)[0])
        return np.stack(users).astype(np.float32)

    def user_vectors(
        self, items: Sequence[npt.NDArray[np.int32]], events: Sequence[npt.NDArray[np.int8]]
    ) -> npt.NDArray[np.float32]:
        """The reference user vectors ``[U, D]`` of these histories."""
        if self.reference is not None:
            return self.reference(items, events)
        return self.stepped_reference(items, events)


def _pair(outputs: Any, where: str) -> tuple[tf.Tensor, tf.Tensor]:
    """``(state, user)`` from a list/tuple of two or a dict with those keys."""
    if isinstance(outputs, dict):
        if set(outputs) != {"state", "user"}:
            raise ConversionError(
                f"{where} returned a dict with keys {sorted(outputs)}; name its two outputs "
                f"'state' and 'user' ({CONTRACT})"
            )
        return outputs["state"], outputs["user"]
    if isinstance(outputs, list | tuple) and len(outputs) == 2:
        return outputs[0], outputs[1]
    count = len(outputs) if isinstance(outputs, list | tuple) else 1
    raise ConversionError(
        f"{where} returned {count} output(s); return two, the new state and the user vector "
        f"({CONTRACT})"
    )


def _state_vector(initial_state: npt.ArrayLike | int | None, declared: int | None) -> Any:
    """``initial_state`` as float32 ``[H]`` (an int ``H``: zeros; ``None``: zeros of the
    model's declared ``H``)."""
    if initial_state is None:
        if declared is None:
            raise ConversionError(
                "the model does not declare its state size H: pass initial_state (an array "
                "[H], or H for zeros)"
            )
        return np.zeros(declared, np.float32)
    if isinstance(initial_state, int | np.integer):
        return np.zeros(int(initial_state), np.float32)
    state = np.asarray(initial_state, dtype=np.float32)
    if state.ndim == 2 and state.shape[0] == 1:
        state = state[0]
    if state.ndim != 1 or state.shape[0] < 1:
        raise ConversionError(
            f"initial_state must be one state vector [H] (or [1, H]), got shape "
            f"{list(np.shape(initial_state))}"
        )
    if not np.isfinite(state).all():
        raise ConversionError("initial_state holds NaN or infinite values")
    if declared is not None and state.shape[0] != declared:
        raise ConversionError(
            f"initial_state has {state.shape[0]} values but the model's state input is "
            f"[1, {declared}]: pass a state of the size the model takes"
        )
    return np.ascontiguousarray(state)


def _declared_width(shape: Any) -> int | None:
    dims = list(shape) if shape is not None else []
    return int(dims[-1]) if dims and dims[-1] is not None else None


def from_keras_step(
    model: keras.Model, initial_state: npt.ArrayLike | int | None, reference: Reference | None
) -> StepSource:
    """A Keras model ``[item, event, state] -> [state, user]`` (see the module docstring)."""
    declared = _declared_width(model.inputs[2].shape) if len(model.inputs) == 3 else None

    def fn(item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _pair(model([item, event, state], training=False), f"Keras model {model.name!r}")

    return StepSource(
        fn=fn,
        tracked=model,
        initial_state=_state_vector(initial_state, declared),
        reference=reference,
        description=f"Keras model {model.name!r}",
    )


def from_module(module: object, initial_state: npt.ArrayLike | int | None) -> StepSource:
    """A ``tf.Module`` whose ``step`` (or ``__call__``) is the step function; its variables
    must be attributes of the module (or of what it holds), else they are not exported."""
    call = getattr(module, "step", None) or (module if callable(module) else None)
    if call is None:
        raise ConversionError(
            f"{type(module).__name__} has neither a step(item, event, state) method nor "
            f"__call__: give it one ({CONTRACT})"
        )
    where = f"{type(module).__name__}.step"

    def fn(item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _pair(call(item, event, state), where)

    return StepSource(
        fn=fn,
        tracked=module,
        initial_state=_state_vector(initial_state, None),
        description=where,
    )


def from_saved_model(path: Path, initial_state: npt.ArrayLike | int | None) -> StepSource:
    """A SavedModel directory with a signature ``step`` (or its only signature)."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ConversionError(f"{path} is not a SavedModel directory (no saved_model.pb)")
    loaded = tf.saved_model.load(str(path))
    signatures = dict(loaded.signatures)
    if "step" in signatures:
        name = "step"
    elif len(signatures) == 1:
        name = next(iter(signatures))
    else:
        raise ConversionError(
            f"{path}: SavedModel signatures {sorted(signatures)}; export the step function as "
            f"the signature 'step' ({CONTRACT})"
        )
    signature = signatures[name]
    inputs = signature.structured_input_signature[1]
    if set(inputs) != {"item", "event", "state"}:
        raise ConversionError(
            f"{path}: signature {name!r} takes {sorted(inputs)}; name its inputs 'item', "
            f"'event' and 'state' ({CONTRACT})"
        )
    where = f"{path}: signature {name!r}"

    def fn(item: tf.Tensor, event: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        args = {"item": item, "event": event, "state": state}
        args = {k: tf.cast(v, inputs[k].dtype) for k, v in args.items()}
        return _pair(signature(**args), where)

    return StepSource(
        fn=fn,
        tracked=loaded,
        initial_state=_state_vector(initial_state, _declared_width(inputs["state"].shape)),
        description=where,
    )
