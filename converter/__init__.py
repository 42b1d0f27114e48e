"""pocketrec.converter: training of the interest model and export of on-device bundles.

The public entry point for anyone's model is :func:`export` (see ``pipeline.py``); a model
directory written by ``pocketrec train`` goes through :func:`export_bundle`, the same pipeline.

Importing this package does not import TensorFlow or Keras (the CLI reads ``converter.config``
for its help without them): the names below load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocketrec.core.errors import ConversionError
from pocketrec.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from pocketrec.converter.pipeline import ExportResult, export, export_bundle
    from pocketrec.converter.stepping import SteppedModel, step_form

_LAZY = {
    "ExportResult": "pipeline",
    "export": "pipeline",
    "export_bundle": "pipeline",
    "SteppedModel": "stepping",
    "step_form": "stepping",
}

__all__ = [
    "ConversionError",
    "ExportResult",
    "SteppedModel",
    "export",
    "export_bundle",
    "step_form",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
