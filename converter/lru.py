"""Linear recurrent unit (LRU) blocks: a per-event step model with O(1) work per event.

One block maps the input sequence ``x`` ``[B, T, E]`` to ``[B, T, E]``::

    h_t = λ ⊙ h_{t-1} + gamma ⊙ (B x_t)          complex diagonal recurrence, state [N] complex
    z_t = LayerNorm(x_t + dropout(Re(C h_t) + c))
    y_t = LayerNorm(z_t + dropout(W2 gelu(W1 z_t + b1) + b2))      W1: E → 4E

with ``λ = exp(-nu + iθ)`` (``nu > 0``, so ``|λ| < 1``: the state is stable by construction) and
the normalisation ``gamma`` initialised to ``sqrt(1 - |λ|²)`` (Orvieto et al., 2023, "Resurrecting
recurrent neural networks for long sequences"; used for recommendation by Yue et al., 2024,
"Linear recurrent units for sequential recommendation").

The sequence form (training, validation, evaluation) runs the recurrence for all positions as a
*chunked scan*: the history is cut into ``K = ceil(T / chunk)`` chunks of ``C = ceil(T / K)``
events (at most ``chunk``, with at most ``K - 1`` positions of padding); within a chunk the state
from zero is a causal Toeplitz product ``Σ_{s≤t} λ^{t-s} u_s`` (``N`` batched
``[C, C]`` matmuls), and across chunks a scan carries the state entering each
chunk, ``H_k = λ^C H_{k-1} + (chunk k's own end state)``, adding ``λ^{t+1} H_{k-1}`` to position
``t`` of chunk ``k``. Time O(T·C·N), memory O(T·N) per sequence (the plain Toeplitz form over the
whole history was O(T²·N) in both). The step model runs the recurrence one event at a time on the
real and imaginary parts (``[2N]`` floats per block), which is what TFLite gets (built-in ops
only: matmul, mul, add, mean, rsqrt, tanh); it is the sequence form's parity reference.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

R_MAX = 0.99  # initial |λ| is drawn in [r_min, R_MAX]
CHUNK = 64  # events per chunk of the sequence form's scan (bench/bench_lru_length.py)


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
        chunk: int = CHUNK,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 event, got {chunk}")
        self.init_std = init_std
        self.chunk = chunk
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
        return self._read_out(*self._scan(*self._inputs(x)))

    def _powers(self, lag: Any) -> tuple[Any, Any]:
        """``λ^lag`` (real, imaginary) ``[..., N]`` for float32 lags ``[..., 1]`` (``lag >= 0``)."""
        decay = ops.exp(-lag * ops.exp(self.nu_log))
        return decay * ops.cos(lag * self.theta), decay * ops.sin(lag * self.theta)

    def _scan(self, u_re: Any, u_im: Any) -> tuple[Any, Any]:
        """States ``h_t = λ h_{t-1} + u_t`` from ``h_{-1} = 0`` for inputs ``[B, T, N]`` (real,
        imaginary) → ``[B, T, N]`` each, by the chunked scan of the module docstring."""
        b, t, n = ops.shape(u_re)[0], ops.shape(u_re)[1], self.state_size
        # K = ceil(T / chunk) chunks of equal size C = ceil(T / K) <= chunk: at most K - 1
        # padded positions (C = chunk would pad a 65-event window to 128).
        k = ops.maximum((t + self.chunk - 1) // self.chunk, 1)
        c = (t + k - 1) // k
        pad = [[0, 0], [0, k * c - t], [0, 0]]
        u_re = ops.reshape(ops.pad(u_re, pad), (b, k, c, n))
        u_im = ops.reshape(ops.pad(u_im, pad), (b, k, c, n))
        # Within a chunk, from state zero: the causal Toeplitz product with kernel λ^(t-s).
        pos = ops.arange(c, dtype="float32")
        lag = ops.expand_dims(pos, 1) - ops.expand_dims(pos, 0)  # [C, C], t - s
        causal = ops.expand_dims(ops.cast(lag >= 0, "float32"), -1)
        k_re, k_im = self._powers(ops.expand_dims(ops.maximum(lag, 0.0), -1))  # [C, C, N]
        k_re, k_im = k_re * causal, k_im * causal

        # The Toeplitz product as N batched [C, C] @ [C, B*K] matmuls: TensorFlow's einsum for
        # "tsn,bksn->bktn" took twice as long (forward + backward of one block at B = 32,
        # T = 200, N = 128: 33 -> 17 ms), with the same sums to the last bit.
        kr, ki = ops.transpose(k_re, (2, 0, 1)), ops.transpose(k_im, (2, 0, 1))  # [N, C, C]
        ur = ops.reshape(ops.transpose(u_re, (3, 2, 0, 1)), (n, c, -1))  # [N, C, B*K]
        ui = ops.reshape(ops.transpose(u_im, (3, 2, 0, 1)), (n, c, -1))

        def back(h: Any) -> Any:  # [N, C, B*K] -> [B, K, C, N]
            return ops.transpose(ops.reshape(h, (n, c, b, k)), (2, 3, 1, 0))

        h_re = back(ops.matmul(kr, ur) - ops.matmul(ki, ui))
        h_im = back(ops.matmul(kr, ui) + ops.matmul(ki, ur))
        # Across chunks: H_{k-1} enters chunk k (H_{-1} = 0, H_k = λ^C H_{k-1} + end_k).
        a, s = self._powers(ops.reshape(ops.cast(c, "float32"), (1,)))

        def carry(h: Any, end: Any) -> tuple[Any, Any]:  # [B, 2N]: real parts, then imaginary
            h_re, h_im = h[:, :n], h[:, n:]
            new = ops.concatenate([a * h_re - s * h_im, s * h_re + a * h_im], axis=-1)
            return new + end, h

        # One tensor per scan input and output (Keras' TF scan mis-checks several with unknown K).
        ends = ops.transpose(ops.concatenate([h_re[:, :, -1], h_im[:, :, -1]], -1), (1, 0, 2))
        _, entering = ops.scan(carry, ops.zeros((b, 2 * n), dtype=h_re.dtype), ends)
        entering = ops.expand_dims(ops.transpose(entering, (1, 0, 2)), 2)  # [B, K, 1, 2N]
        in_re, in_im = entering[..., :n], entering[..., n:]
        p_re, p_im = self._powers(ops.expand_dims(pos + 1.0, -1))  # [C, N]: λ^(t+1)
        h_re = h_re + p_re * in_re - p_im * in_im
        h_im = h_im + p_re * in_im + p_im * in_re
        h_re = ops.reshape(h_re, (b, k * c, n))[:, :t]
        h_im = ops.reshape(h_im, (b, k * c, n))[:, :t]
        return h_re, h_im

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
