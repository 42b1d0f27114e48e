"""Finding a TFLite interpreter: ``ai_edge_litert`` first, then ``tflite_runtime``, then
``tensorflow.lite`` (the last one only when TensorFlow is already installed; the runtime never
requires it). Which one is used is reported by :func:`interpreter_name`.

:data:`INTERPRETER_ERRORS` are the exceptions these interpreters raise for a model they cannot
load, allocate or run; ``default_delegates=False`` gives an interpreter on the built-in kernels
alone (no XNNPACK delegate), which ``runtime/step.py`` runs an unproven model on first.

LiteRT's native notice on the first XNNPACK interpreter of a process ("INFO: Created TensorFlow
Lite XNNPACK delegate for CPU.") is kept off stderr unless ``POCKETREC_VERBOSE=1``
(``pocketrec.core.third_party_logs``), and so are TensorFlow's INFO lines when the fallback
``tensorflow.lite`` is imported.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pocketrec.core.errors import PocketrecError
from pocketrec.core.third_party_logs import quiet_tensorflow, without_xnnpack_notice

_CANDIDATES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)

INTERPRETER_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, TypeError)
"""What the interpreters (all three above) raise for a model they cannot load, allocate or run,
as seen on corrupted models (``tests/test_runtime_corrupt_models.py``): ``ValueError`` for a
flatbuffer they cannot read, a tensor index out of range or a tensor without data;
``RuntimeError`` for a kernel whose Prepare or Eval failed (with the kernel's message);
``TypeError`` when their pybind11 bindings refuse an index read from the model (a negative
tensor index for an unsigned argument). Note that ``BundleError`` is a ``ValueError``."""


class InterpreterUnavailableError(PocketrecError, ImportError):
    """No TFLite interpreter package can be imported."""


@cache
def _interpreter_module() -> tuple[str, Any]:
    errors = []
    for name, module in _CANDIDATES:
        if name == "tensorflow.lite":
            quiet_tensorflow()
        try:
            return name, importlib.import_module(module)
        except ImportError as exc:  # numpy-ABI failures of tflite_runtime also land here
            errors.append(f"{name}: {exc}")
    raise InterpreterUnavailableError(
        "no TFLite interpreter found; install ai-edge-litert (or tflite-runtime with numpy<2). "
        + "; ".join(errors)
    )


def interpreter_name() -> str:
    """Which package provides the interpreter (``ai_edge_litert``, ``tflite_runtime``, …)."""
    return _interpreter_module()[0]


def make_interpreter(
    model_content: bytes, *, num_threads: int = 1, default_delegates: bool = True
) -> Any:
    """A new interpreter for a ``.tflite`` model given as bytes; ``default_delegates=False``:
    the built-in kernels only (no XNNPACK delegate, tensors not allocated). With the default
    delegates its tensors are allocated (where the delegate is applied and LiteRT prints its
    notice, filtered out here). Raises :data:`INTERPRETER_ERRORS`."""
    _name, module = _interpreter_module()
    if default_delegates:
        with without_xnnpack_notice():
            interpreter = module.Interpreter(model_content=model_content, num_threads=num_threads)
            interpreter.allocate_tensors()
        return interpreter
    # beside Interpreter in tflite_runtime and ai_edge_litert, in tensorflow.lite's experimental
    resolvers = getattr(module, "OpResolverType", None) or module.experimental.OpResolverType
    return module.Interpreter(
        model_content=model_content,
        num_threads=num_threads,
        experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
