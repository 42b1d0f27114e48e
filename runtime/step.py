"""The step model: one event in, the new state and user vector out, through the TFLite interpreter.

The ``step`` signature names the tensors; the event itself runs on the interpreter's main
subgraph through the raw path (``set_tensor`` x3, ``invoke``, ``get_tensor`` x2), about twice as
fast as a signature runner, which resizes every input on every call. The tensor indices come from
a signature runner on a second, probe interpreter (after ``get_signature_runner`` an interpreter's
own ``invoke`` must not be called), and at load both paths run one probe event: if they disagree
(a signature that is not the main subgraph) the signature runner is used instead.

Thread safety: a :class:`StepModel` is *not* safe to call from several threads at once; the
runtime gives each thread its own instance (:meth:`StepModel.clone`).
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
            probe = make_interpreter(model_content)
            signatures = probe.get_signature_list()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{source}: the interpreter cannot load it ({exc})") from None
        if SIGNATURE not in signatures:
            raise BundleError(f"{source}: no '{SIGNATURE}' signature (found {list(signatures)})")
        inputs = set(signatures[SIGNATURE]["inputs"])
        outputs = set(signatures[SIGNATURE]["outputs"])
        if inputs != {"item", "event", "state"} or outputs != {"state", "user"}:
            raise BundleError(f"{source}: unexpected signature {signatures[SIGNATURE]}")
        self._content = model_content
        self._source = source
        runner: Any = probe.get_signature_runner(SIGNATURE)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        self.state_dim = int(ins["state"]["shape"][-1])
        self.interpreter = interpreter_name()
        self._item = np.zeros((1, 1), dtype=np.int32)
        self._event = np.zeros((1, 1), dtype=np.int32)
        self._inputs = (ins["item"]["index"], ins["event"]["index"], ins["state"]["index"])
        self._outputs = (outs["state"]["index"], outs["user"]["index"])
        self._runner: Any = None
        self._interpreter.allocate_tensors()
        probe_state = np.linspace(-0.5, 0.5, self.state_dim, dtype=np.float32)
        raw = self.step(0, 1, probe_state)
        self._runner = runner
        signature = self.step(0, 1, probe_state)
        pairs = zip(raw, signature, strict=True)
        if all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in pairs):
            self._runner = None

    def clone(self) -> StepModel:
        """A new, independent interpreter for the same model (one per thread, see above)."""
        return StepModel(self._content, source=self._source)

    def initial_state(self) -> npt.NDArray[np.float32]:
        """The state of a user with no events: zeros ``[H]``."""
        return np.zeros(self.state_dim, dtype=np.float32)

    def step(
        self, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Apply one event; returns new arrays: the state ``[H]`` and the user vector
        ``[D + 1]`` (float32)."""
        self._item[0, 0] = item
        self._event[0, 0] = event
        if self._runner is not None:
            out = self._runner(item=self._item, event=self._event, state=state.reshape(1, -1))
            return out["state"][0].copy(), out["user"][0].copy()
        interpreter = self._interpreter
        in_item, in_event, in_state = self._inputs
        interpreter.set_tensor(in_item, self._item)
        interpreter.set_tensor(in_event, self._event)
        interpreter.set_tensor(in_state, state.reshape(1, -1))
        interpreter.invoke()
        out_state, out_user = self._outputs
        return interpreter.get_tensor(out_state)[0], interpreter.get_tensor(out_user)[0]

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
