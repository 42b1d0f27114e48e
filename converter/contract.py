"""Checks of a step function against the step contract, before any conversion: each failure is a
:class:`ConversionError` that says what to change.

- the call with ``item`` int32 ``[1, 1]``, ``event`` int32 ``[1, 1]``, ``state`` float32
  ``[1, H]`` works, and returns ``state`` float32 ``[1, H]`` and ``user`` float32 ``[1, D]``;
- ``D`` is the catalog's width (scores are inner products of the two);
- the model's outputs are finite on the first and the last item under every event type;
- the state round-trips: the same events from the same state give the same results a second
  time (a model that keeps state of its own, such as a stateful RNN or an assigned variable,
  would lose it on the device, which only carries ``state``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from pocketrec.converter.step_source import CONTRACT, StepSource
from pocketrec.core.errors import ConversionError

ROUND_TRIP_TOLERANCE = 1e-5


def _call(
    source: StepSource, item: int, event: int, state: npt.NDArray[np.float32]
) -> tuple[tf.Tensor, tf.Tensor]:
    """One call of the source's step function (eager), its errors as ``ConversionError``."""
    try:
        new_state, user = source.fn(
            tf.constant([[item]], tf.int32), tf.constant([[event]], tf.int32), tf.constant(state)
        )
    except ConversionError:
        raise
    except Exception as exc:  # the user's code may raise anything
        raise ConversionError(
            f"{source.description} failed on item {item}, event {event} with a state of shape "
            f"[1, {source.state_dim}] ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
            f"it must accept {CONTRACT}"
        ) from exc
    return tf.convert_to_tensor(new_state), tf.convert_to_tensor(user)


def check_contract(
    source: StepSource, catalog: npt.NDArray[np.float32], num_event_types: int
) -> int:
    """Check ``source`` against the contract with this catalog ``[N, D]``; returns ``D``."""
    where = source.description
    h = source.state_dim
    s0 = source.initial_state[None, :]
    new_state, user = _call(source, 0, 0, s0)
    if tuple(new_state.shape) != (1, h) or new_state.dtype != tf.float32:
        hint = (
            " (a model with several states, such as an LSTM's h and c, concatenates them into "
            "one vector and splits it again inside the step)"
            if new_state.shape.rank == 2 and new_state.shape[1] != h
            else ""
        )
        raise ConversionError(
            f"{where} returned a state {new_state.dtype.name} {new_state.shape.as_list()} for a "
            f"state float32 [1, {h}]: return the new state with the shape and dtype of the state "
            f"it was given{hint}"
        )
    if user.shape.rank != 2 or user.shape[0] != 1 or user.dtype != tf.float32:
        raise ConversionError(
            f"{where} returned a user vector {user.dtype.name} {user.shape.as_list()}; return "
            "float32 [1, D] (cast it, and keep the batch dimension of 1)"
        )
    d = int(user.shape[1])
    if catalog.shape[1] != d:
        raise ConversionError(
            f"the catalog has {catalog.shape[1]} columns but the user vector has {d}: an item's "
            "score is the inner product of the two, so make the catalog rows the vectors the "
            "user vector is multiplied with (with an item bias b, use catalog rows [v, b] and "
            "append a 1 to the user vector)"
        )
    last = catalog.shape[0] - 1
    probes = [(0, e) for e in range(num_event_types)] + [(last, num_event_types - 1)]
    for item, event in probes:
        state, user = _call(source, item, event, s0)
        if not (np.isfinite(state.numpy()).all() and np.isfinite(user.numpy()).all()):
            raise ConversionError(
                f"{where} gives NaN or infinite values for item {item}, event {event} from the "
                "initial state, before any conversion: fix the model (or its weights) first"
            )
    _check_round_trip(source, catalog.shape[0], num_event_types)
    return d


def _check_round_trip(source: StepSource, num_items: int, num_event_types: int) -> None:
    """Two runs of the same events from the same state must agree."""
    events = [(i * 7 % num_items, i % num_event_types) for i in range(5)]

    def run() -> list[npt.NDArray[np.float32]]:
        state = source.initial_state[None, :]
        outs = []
        for item, event in events:
            new_state, user = _call(source, item, event, state)
            state = new_state.numpy()
            outs += [state, user.numpy()]
        return outs

    first, second = run(), run()
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(first, second, strict=True))
    if not diff <= ROUND_TRIP_TOLERANCE:
        raise ConversionError(
            f"the state does not round-trip: {source.description} gave results {diff:.3g} apart "
            "for the same events from the same state. It keeps state of its own (a stateful "
            "RNN, a variable it assigns, randomness such as dropout in training mode); the device "
            "carries only `state` from one event to the next, so everything the model remembers "
            "must go out through the returned state and come back in through the state input"
        )
