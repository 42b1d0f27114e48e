"""The step model: one event in, the new state and user vector out, through the TFLite interpreter.

The ``step`` signature names the tensors; the event itself runs on the interpreter's main
subgraph through the raw path (``set_tensor`` x3, ``invoke``, ``get_tensor`` x2), about twice as
fast as a signature runner, which resizes every input on every call. The tensor indices come from
a signature runner on a second, probe interpreter (after ``get_signature_runner`` an interpreter's
own ``invoke`` must not be called), and at load both paths run one probe event: if they disagree
(a signature that is not the main subgraph) the signature runner is used instead.

Loading proves the model before anything serves it, since a corrupt but correctly hashed
``step.tflite`` must raise :class:`BundleError`, never crash the process. Three checks come
before the serving interpreters see the bytes:

1. ``runtime/model_check.py`` reads the flatbuffer and its graph (bounds, indices, data flow,
   sizes) without an interpreter;
2. an interpreter on the built-in kernels alone (no XNNPACK delegate) allocates the model, every
   node's Prepare checking its tensors, and every tensor must come out with the shape the model
   declares;
3. that interpreter runs one event through the ``step`` signature.

The serving interpreters keep the default XNNPACK delegate (2.5-3x faster per event), which plans
with the declared shapes and dereferences what the built-in kernels check: on malformed graphs
(an operator without outputs or with a missing input, a tensor written twice, a declared shape
of 2^31 floats) it segfaults or allocates gigabytes; the checks above refuse all of these
(``tests/test_runtime_corrupt_models.py``). Any error an interpreter raises while loading,
allocating or running the model becomes a ``BundleError`` naming the file. The signature's
tensors must be ``item``/``event`` int32 ``[1, 1]``, ``state`` float32 ``[1, H]`` in and out and
``user`` float32 ``[1, D + 1]``.

Thread safety: a :class:`StepModel` is *not* safe to call from several threads at once; the
runtime gives each thread its own instance (:meth:`StepModel.clone`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import BundleError
from pocketrec.runtime.interpreter import INTERPRETER_ERRORS, interpreter_name, make_interpreter

SIGNATURE = "step"


class StepModel:
    """``step(item, event, state) -> (new_state, user)`` for one event.

    ``state``: float32 ``[H]``; ``user``: float32 ``[D + 1]``; ``item`` and ``event`` are int
    indices (item index into the catalog, event code from ``pocketrec.core.events``).
    """

    def __init__(
        self, model_content: bytes, *, source: str = "step.tflite", checked: bool = False
    ) -> None:
        """Load and prove ``model_content`` (``checked``: the built-in kernels already ran it,
        as for a :meth:`clone`); raises :class:`BundleError` naming ``source``."""
        self._content = model_content
        self._source = source
        self.interpreter = interpreter_name()
        self.state_dim = 0  # H, set from the signature
        self.user_dim = 0  # D + 1, set from the signature
        self._item = np.zeros((1, 1), dtype=np.int32)
        self._event = np.zeros((1, 1), dtype=np.int32)
        self._runner: Any = None
        try:
            self._load(checked)
        except BundleError:
            raise
        except INTERPRETER_ERRORS as exc:
            raise BundleError(
                f"{source}: the interpreter cannot load or run it ({_describe(exc)})"
            ) from None

    def _load(self, checked: bool) -> None:
        if not checked:  # the checks before the serving interpreters (module docstring)
            # imported here, with its schema tables: `import pocketrec.runtime` stays light
            from pocketrec.runtime.model_check import ModelCheckError, check_model

            try:
                declared = check_model(self._content)
            except ModelCheckError as exc:
                raise BundleError(f"{self._source}: malformed model: {exc}") from None
            builtin = make_interpreter(self._content, default_delegates=False)
            builtin.allocate_tensors()  # every node's Prepare
            self._check_shapes(declared, builtin)
            runner = self._signature_runner(builtin)
            self._check_outputs(self._run(runner, 0, 1, self._probe_state()))
        runner = self._signature_runner(make_interpreter(self._content))
        self._interpreter = make_interpreter(self._content)
        self._interpreter.allocate_tensors()
        raw = self._check_outputs(self._invoke(0, 1, self._probe_state()))
        self._runner = runner
        signature = self._check_outputs(self._invoke(0, 1, self._probe_state()))
        pairs = zip(raw, signature, strict=True)
        if all(np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True) for a, b in pairs):
            self._runner = None

    def _check_shapes(self, declared: list[tuple[int, ...]], interpreter: Any) -> None:
        """Every tensor of the primary subgraph has the shape the model declares once the
        built-in kernels have sized it (the XNNPACK delegate plans with the declared shapes)."""
        for details in interpreter.get_tensor_details():
            index = details["index"]
            if index >= len(declared):  # a kernel's own temporary, not in the model
                continue
            shape = tuple(int(n) for n in details["shape"])
            if shape != declared[index]:
                raise BundleError(
                    f"{self._source}: tensor {index} is declared {list(declared[index])} but its "
                    f"operator makes it {list(shape)}"
                )

    def _probe_state(self) -> npt.NDArray[np.float32]:
        return np.linspace(-0.5, 0.5, self.state_dim, dtype=np.float32)

    def _signature_runner(self, interpreter: Any) -> Any:
        """The ``step`` signature runner of ``interpreter``, its tensors checked; sets the
        dimensions and the tensor indices of the raw path."""
        signatures = interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise BundleError(
                f"{self._source}: no '{SIGNATURE}' signature (found {list(signatures)})"
            )
        inputs = set(signatures[SIGNATURE]["inputs"])
        outputs = set(signatures[SIGNATURE]["outputs"])
        if inputs != {"item", "event", "state"} or outputs != {"state", "user"}:
            raise BundleError(f"{self._source}: unexpected signature {signatures[SIGNATURE]}")
        runner = interpreter.get_signature_runner(SIGNATURE)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        self._expect(ins["item"], "input 'item'", np.int32, 1)
        self._expect(ins["event"], "input 'event'", np.int32, 1)
        self.state_dim = self._expect(ins["state"], "input 'state'", np.float32)
        self.user_dim = self._expect(outs["user"], "output 'user'", np.float32)
        state_out = self._expect(outs["state"], "output 'state'", np.float32)
        if state_out != self.state_dim:
            raise BundleError(
                f"{self._source}: the state input has {self.state_dim} floats, the state output "
                f"{state_out}"
            )
        self._inputs = (ins["item"]["index"], ins["event"]["index"], ins["state"]["index"])
        self._outputs = (outs["state"]["index"], outs["user"]["index"])
        return runner

    def _expect(
        self, details: dict[str, Any], what: str, dtype: type, width: int | None = None
    ) -> int:
        """Check that a signature tensor is ``dtype [1, width]`` (any width >= 1 when ``None``);
        returns its width."""
        shape = [int(n) for n in details["shape"]]
        good = len(shape) == 2 and shape[0] == 1 and shape[1] >= 1
        if not good or (width is not None and shape[1] != width) or details["dtype"] != dtype:
            wanted = f"[1, {'N' if width is None else width}]"
            raise BundleError(
                f"{self._source}: {what} is {np.dtype(details['dtype']).name} {shape}, expected "
                f"{np.dtype(dtype).name} {wanted}"
            )
        return shape[1]

    def _check_outputs(
        self, outputs: tuple[npt.NDArray[Any], npt.NDArray[Any]]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The outputs of one event, checked to be float32 ``[1, H]`` and ``[1, D + 1]``."""
        widths = (self.state_dim, self.user_dim)
        for got, width, what in zip(outputs, widths, ("state", "user"), strict=True):
            if got.dtype != np.float32 or got.shape != (1, width):
                raise BundleError(
                    f"{self._source}: output '{what}' came out as {got.dtype} {list(got.shape)}, "
                    f"expected float32 [1, {width}]"
                )
        return outputs

    def clone(self) -> StepModel:
        """A new, independent interpreter for the same model (one per thread, see above)."""
        return StepModel(self._content, source=self._source, checked=True)

    def initial_state(self) -> npt.NDArray[np.float32]:
        """The state of a user with no events: zeros ``[H]``."""
        return np.zeros(self.state_dim, dtype=np.float32)

    def step(
        self, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Apply one event; returns new arrays: the state ``[H]`` and the user vector
        ``[D + 1]`` (float32)."""
        new_state, user = self._invoke(item, event, state)
        if self._runner is not None:
            return new_state[0].copy(), user[0].copy()
        return new_state[0], user[0]

    def checked_step(
        self, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """:meth:`step` with checks, for the proof and for every event the runtime applies: an
        interpreter error or a non-finite output (weights that blow up on this item) raises
        :class:`BundleError` naming the model, so it never becomes a user's state."""
        try:
            new_state, user = self.step(item, event, state)
        except INTERPRETER_ERRORS as exc:
            raise BundleError(f"{self._event_text(item, event)} fails ({_describe(exc)})") from None
        # per event: the array methods cost about half of np.all(np.isfinite(...)) here
        if not (np.isfinite(new_state).all() and np.isfinite(user).all()):
            raise BundleError(
                f"{self._event_text(item, event)} gives a non-finite state or user vector"
            )
        return new_state, user

    def _event_text(self, item: int, event: int) -> str:
        return f"{self._source}: an event on item {item} (event type {event})"

    def _invoke(
        self, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """One event through the raw path (or the runner): state ``[1, H]``, user ``[1, D + 1]``."""
        if self._runner is not None:
            return self._run(self._runner, item, event, state)
        self._item[0, 0] = item
        self._event[0, 0] = event
        interpreter = self._interpreter
        in_item, in_event, in_state = self._inputs
        interpreter.set_tensor(in_item, self._item)
        interpreter.set_tensor(in_event, self._event)
        interpreter.set_tensor(in_state, state.reshape(1, -1))
        interpreter.invoke()
        out_state, out_user = self._outputs
        return interpreter.get_tensor(out_state), interpreter.get_tensor(out_user)

    def _run(
        self, runner: Any, item: int, event: int, state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        self._item[0, 0] = item
        self._event[0, 0] = event
        out = runner(item=self._item, event=self._event, state=state.reshape(1, -1))
        return out["state"], out["user"]

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


def _describe(exc: Exception) -> str:
    """An interpreter's error on one line (its messages span lines and repeat), at most 400
    characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"
