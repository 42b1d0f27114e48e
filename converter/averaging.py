"""Exponential moving average (EMA) of model weights, for evaluating and keeping smoother weights.

``shadow ← m·shadow + (1 - m)·w`` after every optimizer step, with the momentum warmed up as
``m_t = min(m, (1 + t) / (10 + t))`` so that the first steps' (random) weights fade quickly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tensorflow as tf


class WeightAverage:
    """Shadow copies of ``variables`` (any TF/Keras variables), updated by :meth:`update`."""

    def __init__(self, variables: Sequence[Any], momentum: float) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"EMA momentum must be in (0, 1), got {momentum}")
        self.variables = list(variables)
        self.momentum = momentum
        self.shadow = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in variables]
        self.steps = tf.Variable(0.0, trainable=False)

    def update(self) -> None:
        """One EMA step (call after each optimizer step; works inside ``tf.function``)."""
        m = tf.minimum(self.momentum, (1.0 + self.steps) / (10.0 + self.steps))
        for s, v in zip(self.shadow, self.variables, strict=True):
            s.assign(m * s + (1.0 - m) * tf.convert_to_tensor(v))
        self.steps.assign_add(1.0)

    def reset(self) -> None:
        """Start over: the shadows take the variables' current values; the warm-up restarts."""
        for s, v in zip(self.shadow, self.variables, strict=True):
            s.assign(tf.convert_to_tensor(v))
        self.steps.assign(0.0)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside the block the variables hold the averaged weights; restored on exit."""
        raw = [v.numpy() for v in self.variables]
        for v, s in zip(self.variables, self.shadow, strict=True):
            v.assign(s.numpy())
        try:
            yield
        finally:
            for v, value in zip(self.variables, raw, strict=True):
                v.assign(value)
