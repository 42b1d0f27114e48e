"""Linear recurrent unit (LRU) blocks: a per-event step model with O(1) work per event.

One block maps the input sequence ``x`` ``[B, T, E]`` to ``[B, T, E]``::

    h_t = λ ⊙ h_{t-1} + gamma ⊙ (B x_t)          complex diagonal recurrence, state [N] complex
    z_t = LayerNorm(x_t + dropout(Re(C h_t) + c))
    y_t = LayerNorm(z_t + dropout(W2 gelu(W1 z_t + b1) + b2))      W1: E → 4E

with ``λ = exp(-nu + iθ)`` (``nu > 0``, so ``|λ| < 1``: the state is stable by construction) and
the normalisation ``gamma`` initialised to ``sqrt(1 - |λ|²)`` (Orvieto et al., 2023, "Resurrecting
recurrent neural networks for long sequences"; used for recommendation by Yue et al., 2024,
"Linear recurrent units for sequential recommendation").

Training runs the recurrence for all positions at once as a causal Toeplitz product,
``h_t = Σ_{s≤t} λ^{t-s} u_s`` (one batched matmul per block, no sequential loop); the step
model runs it one event at a time on the real and imaginary parts (``[2N]`` floats per block),
which is what TFLite gets (built-in ops only: matmul, mul, add, mean, rsqrt, tanh).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

R_MAX = 0.99  # initial |λ| is drawn in [r_min, R_MAX]


def weight_init(std: float, seed: int) -> keras.initializers.Initializer:
    """Initializer of one weight matrix: truncated normal (±2 std) when ``std > 0``, else
    Glorot uniform. One seed per matrix: a seeded Keras initializer repeats its values."""
    if std > 0:
        return keras.initializers.TruncatedNormal(stddev=std, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


class LinearRecurrence(keras.layers.Layer):
    """The diagonal complex recurrence and its read-out: ``x [.., E] → Re(C h) + c [.., E]``."""

    def __init__(
        self,
        state_size: int,
        *,
        r_min: float,
        seed: int,
        init_std: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.init_std = init_std
        self.state_size = state_size
        self.r_min = r_min
        self.seed = seed

    def build(self, input_shape: Any) -> None:
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        e, n = int(input_shape[-1]), self.state_size
        rng = np.random.default_rng(self.seed)
        radius = np.sqrt(rng.uniform(self.r_min**2, R_MAX**2, n))
        nu = -np.log(np.maximum(radius, 1e-4))
        theta = rng.uniform(0.0, 2.0 * math.pi, n)
        gamma = np.sqrt(1.0 - radius**2)

        def constant(name: str, value: np.ndarray) -> Any:
            init = keras.initializers.Constant(value.astype(np.float32))
            return self.add_weight(name=name, shape=value.shape, initializer=init)

        self.nu_log = constant("nu_log", np.log(nu))
        self.theta = constant("theta", theta)
        self.gamma_log = constant("gamma_log", np.log(gamma))

        def dense(offset: int) -> keras.initializers.Initializer:
            return weight_init(self.init_std, self.seed * 7 + offset)

        self.b_re = self.add_weight(name="b_re", shape=(e, n), initializer=dense(0))
        self.b_im = self.add_weight(name="b_im", shape=(e, n), initializer=dense(1))
        self.c_re = self.add_weight(name="c_re", shape=(n, e), initializer=dense(2))
        self.c_im = self.add_weight(name="c_im", shape=(n, e), initializer=dense(3))
        self.c_bias = self.add_weight(name="c_bias", shape=(e,), initializer="zeros")

    def _inputs(self, x: Any) -> tuple[Any, Any]:
        gamma = ops.exp(self.gamma_log)
        return ops.matmul(x, self.b_re) * gamma, ops.matmul(x, self.b_im) * gamma

    def _read_out(self, h_re: Any, h_im: Any) -> Any:
        return ops.matmul(h_re, self.c_re) - ops.matmul(h_im, self.c_im) + self.c_bias

    def call(self, x: Any) -> Any:
        """Sequence mode ``x [B, T, E]`` → ``[B, T, E]`` (causal, from state zero); step mode
        ``[x [B, E], h [B, 2N]]`` (real parts, then imaginary) → ``[B, E + 2N]``: the output
        followed by the new state."""
        if isinstance(x, list | tuple):
            return self._step(*x)
        u_re, u_im = self._inputs(x)
        t = ops.shape(x)[1]
        pos = ops.arange(t, dtype="float32")
        lag = ops.expand_dims(pos, 1) - ops.expand_dims(pos, 0)  # [T, T], t - s
        causal = ops.cast(lag >= 0, "float32")
        lag = ops.expand_dims(ops.maximum(lag, 0.0), -1)  # [T, T, 1]
        nu = ops.exp(self.nu_log)
        cos, sin = ops.cos(lag * self.theta), ops.sin(lag * self.theta)  # [T, T, N]
        decay = ops.exp(-lag * nu) * ops.expand_dims(causal, -1)  # [T, T, N]
        k_re, k_im = decay * cos, decay * sin

        def conv(k: Any, u: Any) -> Any:
            return ops.einsum("tsn,bsn->btn", k, u)

        h_re = conv(k_re, u_re) - conv(k_im, u_im)
        h_im = conv(k_re, u_im) + conv(k_im, u_re)
        return self._read_out(h_re, h_im)

    def _step(self, x: Any, h: Any) -> Any:
        n = self.state_size
        h_re, h_im = h[:, :n], h[:, n:]
        u_re, u_im = self._inputs(x)
        magnitude = ops.exp(-ops.exp(self.nu_log))
        a, b = magnitude * ops.cos(self.theta), magnitude * ops.sin(self.theta)
        new_re = a * h_re - b * h_im + u_re
        new_im = b * h_re + a * h_im + u_im
        return ops.concatenate([self._read_out(new_re, new_im), new_re, new_im], axis=-1)


class LRUBlock(keras.layers.Layer):
    """Recurrence + residual + LayerNorm, then a GELU feed-forward + residual + LayerNorm."""

    def __init__(
        self,
        state_size: int,
        dropout: float,
        *,
        r_min: float,
        seed: int,
        init_std: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.init_std = init_std
        self.recurrence = LinearRecurrence(
            state_size, r_min=r_min, seed=seed, init_std=init_std, name="recurrence"
        )
        self.drop_1 = keras.layers.Dropout(dropout, seed=seed + 1)
        self.drop_2 = keras.layers.Dropout(dropout, seed=seed + 2)
        self.drop_3 = keras.layers.Dropout(dropout, seed=seed + 3)
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_1")
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_2")
        self.seed = seed

    def build(self, input_shape: Any) -> None:
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        e = int(input_shape[-1])
        self.ff_in = keras.layers.Dense(
            4 * e, kernel_initializer=weight_init(self.init_std, self.seed + 4), name="ff_in"
        )
        self.ff_out = keras.layers.Dense(
            e, kernel_initializer=weight_init(self.init_std, self.seed + 5), name="ff_out"
        )
        self.recurrence.build(input_shape)
        self.norm_1.build(input_shape)
        self.norm_2.build(input_shape)
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], 4 * e))

    def _feed_forward(self, x: Any, r: Any, training: bool | None) -> Any:
        z = self.norm_1(x + self.drop_1(r, training=training))
        f = self.drop_2(ops.gelu(self.ff_in(z), approximate=True), training=training)
        return self.norm_2(z + self.drop_3(self.ff_out(f), training=training))

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Sequence mode ``[B, T, E]`` → ``[B, T, E]``; step mode (inference)
        ``[x [B, E], h [B, 2N]]`` → ``[B, E + 2N]``: the output followed by the new state."""
        if not isinstance(x, list | tuple):
            return self._feed_forward(x, self.recurrence(x), training)
        e = x[0].shape[-1]
        both = self.recurrence(x)
        return ops.concatenate([self._feed_forward(x[0], both[:, :e], False), both[:, e:]], -1)
