"""Hot kernels: inner-product top-k over the on-device catalog (float32 and int8).

Backends: ``"c"`` (cffi, SIMD with run-time CPU dispatch), ``"numba"`` and ``"numpy"`` (the
reference that defines the right answer). See :func:`topk`.
"""

from pocketrec.native.api import topk
from pocketrec.native.int8 import Int8Items, quantize_int8
from pocketrec.native.registry import backends

__all__ = ["Int8Items", "backends", "quantize_int8", "topk"]
