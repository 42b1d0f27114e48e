"""pocketrec.converter: training of the interest model and export of on-device bundles.

The public entry point for anyone's model is :func:`export` (see ``pipeline.py``); a model
directory written by ``pocketrec train`` goes through :func:`export_bundle`, the same pipeline.
"""

from pocketrec.converter.pipeline import ExportResult, export, export_bundle
from pocketrec.converter.stepping import SteppedModel, step_form
from pocketrec.core.errors import ConversionError

__all__ = [
    "ConversionError",
    "ExportResult",
    "SteppedModel",
    "export",
    "export_bundle",
    "step_form",
]
