"""The step model: one event in, the new state and user vector out, through the TFLite interpreter.

Only the ``step`` signature runner is used (after ``get_signature_runner`` the interpreter's own
``invoke`` must not be called). Thread safety: a :class:`StepModel` is *not* safe to call from
several threads at once; the runtime serialises calls or gives each thread its own instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import BundleError
from pocketrec.runtime.interpreter import interpreter_name, make_interpreter

SIGNATURE = "step"


class StepModel:
    """``step(item, event, state) -> (new_state, user)`` for one event.

    ``state``: float32 ``[H]``; ``user``: float32 ``[D + 1]``; ``item`` and ``event`` are int
    indices (item index into the catalog, event code from ``pocketrec.core.events``).
    """

    def __init__(self, model_content: bytes, *, source: str = "step.tflite") -> None:
        try:
            self._interpreter = make_interpreter(model_content)
            signatures = self._interpreter.get_signature_list()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{source}: the interpreter cannot load it ({exc})") from None
        if SIGNATURE not in signatures:
            raise BundleError(f"{source}: no '{SIGNATURE}' signature (found {list(signatures)})")
        inputs = set(signatures[SIGNATURE]["inputs"])
        outputs = set(signatures[SIGNATURE]["outputs"])
        if inputs != {"item", "event", "state"} or outputs != {"state", "user"}:
            raise BundleError(f"{source}: unexpected signature {signatures[SIGNATURE]}")
        self._runner: Any = self._interpreter.get_signature_runner(SIGNATURE)
        details = self._runner.get_input_details()
        self.state_dim = int(details["state"]["shape"][-1])
        self.interpreter = interpreter_name()
        self._item = np.zeros((1, 1), dtype=np.int32)
        self._event = np.zeros((1, 1), dtype=np.int32)

    def initial_state(self) -> npt.NDArray[np.float32]:
        """The state of a user with no events: zeros ``[H]``."""
        return np.zeros(self.state_dim, dtype=np.float32)

    def step(
        self, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Apply one event; returns copies of the new state ``[H]`` and user vector ``[D + 1]``."""
        self._item[0, 0] = item
        self._event[0, 0] = event
        out = self._runner(item=self._item, event=self._event, state=state.reshape(1, -1))
        return out["state"][0].copy(), out["user"][0].copy()

    def replay(
        self, items: npt.ArrayLike, events: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Run a whole history from the initial state; returns the final state and user vector
        (``None`` for an empty history)."""
        state = self.initial_state()
        user = None
        for item, event in zip(
            np.asarray(items).tolist(), np.asarray(events).tolist(), strict=True
        ):
            state, user = self.step(int(item), int(event), state)
        return state, user
