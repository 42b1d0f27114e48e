"""Finding a TFLite interpreter: ``ai_edge_litert`` first, then ``tflite_runtime``, then
``tensorflow.lite`` (the last one only when TensorFlow is already installed; the runtime never
requires it). Which one is used is reported by :func:`interpreter_name`.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pocketrec.core.errors import PocketrecError

_CANDIDATES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)


class InterpreterUnavailableError(PocketrecError, ImportError):
    """No TFLite interpreter package can be imported."""


@cache
def _interpreter_class() -> tuple[str, Any]:
    errors = []
    for name, module in _CANDIDATES:
        try:
            return name, importlib.import_module(module).Interpreter
        except ImportError as exc:  # numpy-ABI failures of tflite_runtime also land here
            errors.append(f"{name}: {exc}")
    raise InterpreterUnavailableError(
        "no TFLite interpreter found; install ai-edge-litert (or tflite-runtime with numpy<2). "
        + "; ".join(errors)
    )


def interpreter_name() -> str:
    """Which package provides the interpreter (``ai_edge_litert``, ``tflite_runtime``, …)."""
    return _interpreter_class()[0]


def make_interpreter(model_content: bytes, *, num_threads: int = 1) -> Any:
    """A new interpreter for a ``.tflite`` model given as bytes."""
    _name, cls = _interpreter_class()
    return cls(model_content=model_content, num_threads=num_threads)
