"""A step source as a ``.tflite`` flatbuffer with one signature ``step``, built-in ops only.

The step function is exported with Keras' ``ExportArchive`` tracking the object that owns the
variables (a ``tf.function`` over Keras 3 layers that are not tracked would be converted without
its weights: the parity gate catches that as NaN), then converted by
``TFLiteConverter.from_saved_model`` with ``TFLITE_BUILTINS`` only: the device has no Flex
delegate. ``model_dtype`` float16 stores float16 weights; int8 is dynamic-range quantization.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile

import tensorflow as tf
from keras.export import ExportArchive

from pocketrec.converter.step_source import StepSource
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import ConversionError

_MISSING_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def missing_ops(message: str) -> list[str]:
    """The TensorFlow ops a converter error says have no TFLite built-in kernel, sorted."""
    return sorted(set(_MISSING_OP.findall(message)))


def to_tflite(source: StepSource, model_dtype: str = "float32") -> bytes:
    """The step function of ``source`` as TFLite (raises ``ConversionError`` naming any op
    that needs Flex/select TensorFlow ops, with the fix)."""
    if model_dtype not in fmt.MODEL_DTYPES:
        raise ValueError(f"model dtype must be one of {fmt.MODEL_DTYPES}, got {model_dtype!r}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        archive = ExportArchive()
        archive.track(source.tracked)
        endpoint = tf.function(source.endpoint(), input_signature=source.signature())
        archive.add_endpoint("step", endpoint)
        archive.write_out(tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["step"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if model_dtype != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if model_dtype == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as exc:  # the converter raises several unrelated types
            text = str(exc)
            ops = missing_ops(text)
            if ops:
                raise ConversionError(
                    f"{source.description} uses TensorFlow ops that TFLite has no built-in kernel "
                    f"for: {', '.join(ops)}. The device runs built-in ops only (no Flex/select "
                    "TensorFlow ops): write that part with ops TFLite has (matmul, add, mul, "
                    "gather, tanh, sigmoid, exp, log, rsqrt, concatenation, slicing; see "
                    "https://ai.google.dev/edge/litert/models/ops_compatibility), or compute it "
                    "outside the step (in the catalog, or before training)"
                ) from None
            summary = " ".join(text.split())[:600]
            raise ConversionError(f"TFLite conversion failed: {summary}") from exc
    return flatbuffer
