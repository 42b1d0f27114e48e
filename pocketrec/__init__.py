"""pocketrec: an embedded, on-device recommender.

The public facade. Subpackages: ``pocketrec.core`` (shared ids, data, metrics),
``pocketrec.native`` (top-k kernels), ``pocketrec.runtime`` (on-device recommender),
``pocketrec.converter`` (TensorFlow training and export), ``pocketrec.storage`` (SQLite store).
"""

from pocketrec.native import Int8Items, ScreenedItems, backends, quantize_int8, screen_int8, topk
from pocketrec.runtime import Recommender

__version__ = "0.1.0"

__all__ = [
    "Int8Items",
    "Recommender",
    "ScreenedItems",
    "__version__",
    "backends",
    "quantize_int8",
    "screen_int8",
    "topk",
]
