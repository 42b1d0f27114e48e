"""The parity gate: the TFLite step model, replayed event by event as the device runs it, against
the source model's own user vectors on the same histories.

float32 must agree within :data:`PARITY_TOLERANCE` (max abs over every user vector component) or
the export fails; float16 and int8 models report their difference and the top-10 overlap (the
share of each user's top-10 items that both vectors rank there, history excluded) instead. A
TFLite model that gives NaN where the source does not is refused whatever the dtype: the Keras 3
trap of a function converted without its weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import ConversionError
from pocketrec.core.ranking import select_topk

PARITY_TOLERANCE = 1e-4


def parity_gate(
    source_users: npt.NDArray[np.float32],
    lite_users: npt.NDArray[np.float32],
    catalog: npt.NDArray[np.float32],
    excluded: Sequence[npt.NDArray[np.int64]],
    model_dtype: str,
) -> dict[str, float]:
    """Compare the two ``[U, D]`` sets of user vectors; raises :class:`ConversionError` for NaN
    or a float32 mismatch. Returns ``users``, ``max_abs_diff`` and ``top10_overlap``."""
    if not np.isfinite(lite_users).all():
        bad = int(np.sum(~np.isfinite(lite_users).all(axis=1)))
        raise ConversionError(
            f"the converted TFLite model gives NaN or infinite user vectors for {bad} of "
            f"{len(lite_users)} histories where the source model's are finite. The Keras 3 "
            "trap: a tf.function that calls Keras layers converts without their weights when "
            "the exported object does not hold those layers; pass the Keras model itself (or a "
            "tf.Module that keeps the layers as attributes) as the step model"
        )
    max_abs = float(np.max(np.abs(source_users - lite_users))) if len(lite_users) else 0.0
    overlap = []
    for s_user, l_user, ex in zip(source_users, lite_users, excluded, strict=True):
        eligible = np.ones(catalog.shape[0], dtype=bool)
        eligible[ex] = False
        a, _ = select_topk(catalog @ s_user, eligible, 10)
        b, _ = select_topk(catalog @ l_user, eligible, 10)
        overlap.append(len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1))
    result = {
        "users": float(len(lite_users)),
        "max_abs_diff": max_abs,
        "top10_overlap": float(np.mean(overlap)) if overlap else 1.0,
    }
    if model_dtype == "float32" and not max_abs <= PARITY_TOLERANCE:
        raise ConversionError(
            f"parity check failed: TFLite user vectors differ from the source model's by "
            f"{max_abs:.3g} (> {PARITY_TOLERANCE}) on {len(lite_users)} histories. The step "
            "form computes something else than the model: a layer that mixes time steps "
            "(attention, convolution, pooling over time) cannot be run one event at a time"
        )
    return result
