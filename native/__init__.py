"""Hot kernels: inner-product top-k over the on-device catalog (float32 and int8).

Backends: ``"c"`` (cffi, SIMD with run-time CPU dispatch), ``"numba"`` and ``"numpy"`` (the
reference that defines the right answer). See :func:`topk`.
"""

from pocketrec.native.api import topk
from pocketrec.native.int8 import Int8Items, quantize_int8
from pocketrec.native.registry import backends
from pocketrec.native.screen import ScreenedItems, screen_int8

__all__ = ["Int8Items", "ScreenedItems", "backends", "quantize_int8", "screen_int8", "topk"]
