"""The user-interest model: item (+ event) embedding → recurrent cell → user vector, scored by
inner product.

Per event ``t`` with item ``i_t`` and event type ``e_t``::

    x_t = item_emb[i_t] + event_emb[e_t]              (dropout on x_t while training)
    cell "lru" (see ``lru.py``):
        z_t = LRUBlock_L(… LRUBlock_1(LayerNorm(x_t)))  state: 2N floats per block
        u_t = [z_t, 1]                                  user vector, float32 [E + 1]
    cell "gru":
        h_t = GRU(h_{t-1}, x_t)                         state, float32 [H]
        u_t = [W h_t + c, 1]                            user vector, float32 [D + 1]
    score(j) = <u_t, v_j>,  v_j = [out_emb[j], b_j]    catalog vector, float32 [D + 1]

With ``cosine_temperature = τ > 0`` the user embedding (``z_t``, or the GRU's projection) and
the catalog embeddings are scaled to unit length and the user's divided by ``τ``:
``score(j) = cos(z_t, out_emb[j]) / τ + b_j``, still one inner product of ``[z_t / (τ |z_t|), 1]``
and ``[out_emb[j] / |out_emb[j]|, b_j]``: the step model and the exported catalog hold the
scaled vectors, so the runtime and the kernels are unchanged.

With ``tied=True`` the output embeddings are the input item embeddings (``out_emb = item_emb``).

The item bias ``b_j`` is folded in as the last catalog dimension and the constant 1 as the last
user dimension, so that ranking stays a pure inner product for the native kernels.

Two Keras functional models share the layers: the *sequence* model (training and batch
evaluation; ``[B, T]`` items and events → ``[B, T, D + 1]`` user vectors) and the *step* model
(one event and the previous state → new state and user vector), which is what becomes
``step.tflite``. Both cells do O(1) work per event on device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from pocketrec.converter.config import ModelConfig as ModelConfig
from pocketrec.converter.lru import LRUBlock, weight_init
from pocketrec.core.events import EVENT_NAMES

UNIT_EPS = 1e-12  # added to the squared norm: a zero row stays zero


def unit_rows(x: Any) -> Any:
    """``x`` ``[..., D]`` float32 (tensor or array) with every row along the last axis scaled
    to unit L2 norm; a zero row stays zero."""
    return x * keras.ops.rsqrt(keras.ops.sum(x * x, axis=-1, keepdims=True) + UNIT_EPS)


def output_embeddings(out_emb: Any, config: ModelConfig) -> Any:
    """The catalog embeddings ``[N, D]`` float32 the scores use: the rows of embedding layer
    ``out_emb``, at unit length with ``config.cosine_temperature > 0``."""
    return unit_rows(out_emb.embeddings) if config.cosine_temperature > 0 else out_emb.embeddings


def catalog_vectors(out_emb: Any, out_bias: Any, config: ModelConfig) -> npt.NDArray[np.float32]:
    """``[N, D + 1]`` float32: :func:`output_embeddings` with the item bias (embedding layer
    ``out_bias``, one column) folded in as the last column."""
    emb = keras.ops.convert_to_numpy(output_embeddings(out_emb, config))
    bias = keras.ops.convert_to_numpy(out_bias.embeddings)
    return np.ascontiguousarray(np.concatenate([emb, bias], axis=1), dtype=np.float32)


class InterestModel:
    """The layers of the model and the two functional models built on them."""

    def __init__(self, config: ModelConfig) -> None:
        keras.utils.set_random_seed(config.seed)
        self.config = config
        c = config

        def emb_init(seed: int) -> Any:
            return weight_init(c.init_std, c.seed + seed) if c.init_std > 0 else "uniform"

        self.item_emb = keras.layers.Embedding(
            c.num_items, c.embedding_dim, embeddings_initializer=emb_init(101), name="item_emb"
        )
        self.event_emb = keras.layers.Embedding(
            len(EVENT_NAMES),
            c.embedding_dim,
            embeddings_initializer=emb_init(102),
            name="event_emb",
        )
        self.dropout = keras.layers.Dropout(c.dropout, seed=c.seed, name="input_dropout")
        if c.cell == "gru":
            self.gru = keras.layers.GRU(c.hidden_dim, return_sequences=True, name="gru")
            self.state_dropout = keras.layers.Dropout(
                c.dropout, seed=c.seed + 1, name="state_dropout"
            )
            self.project = keras.layers.Dense(c.user_dim, name="project")
        else:
            self.input_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="input_norm")
            self.blocks = [
                LRUBlock(
                    c.hidden_dim,
                    c.dropout,
                    r_min=c.r_min,
                    seed=c.seed + 10 * (i + 1),
                    init_std=c.init_std,
                    name=f"lru_{i}",
                )
                for i in range(c.num_layers)
            ]
        # Tied: the catalog vectors are the input item embeddings themselves.
        self.out_emb = (
            self.item_emb
            if c.tied
            else keras.layers.Embedding(c.num_items, c.user_dim, name="out_emb")
        )
        self.out_bias = keras.layers.Embedding(
            c.num_items, 1, embeddings_initializer="zeros", name="out_bias"
        )
        self.sequence_model = self._build_sequence_model()
        self.step_model = self._build_step_model()
        # Build the output embeddings (they are only read as whole tables).
        self.out_emb.build((None,))
        self.out_bias.build((None,))

    def _with_one(self, u: Any) -> Any:
        """``[..., D] → [..., D + 1]``: the user vector, scaled for the cosine score when the
        config asks for it, with the constant 1 that meets the folded item bias."""
        if self.config.cosine_temperature > 0:
            u = unit_rows(u) / self.config.cosine_temperature
        ones = keras.ops.ones_like(u[..., :1])
        return keras.ops.concatenate([u, ones], axis=-1)

    def _build_sequence_model(self) -> keras.Model:
        items = keras.Input((None,), dtype="int32", name="items")
        events = keras.Input((None,), dtype="int32", name="events")
        x = self.dropout(self.item_emb(items) + self.event_emb(events))
        if self.config.cell == "gru":
            u = self.project(self.state_dropout(self.gru(x)))
        else:
            u = self.input_norm(x)
            for block in self.blocks:
                u = block(u)
        return keras.Model([items, events], self._with_one(u), name="sequence")

    def _build_step_model(self) -> keras.Model:
        item = keras.Input((1,), batch_size=1, dtype="int32", name="item")
        event = keras.Input((1,), batch_size=1, dtype="int32", name="event")
        state = keras.Input((self.config.state_dim,), batch_size=1, dtype="float32", name="state")
        x = self.item_emb(item)[:, 0, :] + self.event_emb(event)[:, 0, :]
        if self.config.cell == "gru":
            _, new_states = self.gru.cell(x, [state])
            new_state = new_states[0] if isinstance(new_states, list | tuple) else new_states
            u = self.project(new_state)
        else:
            n, e, parts = 2 * self.config.hidden_dim, self.config.embedding_dim, []
            u = self.input_norm(x)
            for i, block in enumerate(self.blocks):
                both = block([u, state[:, i * n : (i + 1) * n]])
                u = both[:, :e]
                parts.append(both[:, e:])
            new_state = keras.ops.concatenate(parts, axis=-1)
        return keras.Model([item, event, state], [new_state, self._with_one(u)], name="step")

    def catalog(self) -> npt.NDArray[np.float32]:
        """Catalog vectors ``[N, D + 1]`` float32: output embeddings with the bias folded in."""
        return catalog_vectors(self.out_emb, self.out_bias, self.config)

    def initial_user(self) -> npt.NDArray[np.float32]:
        """The user vector ``[D + 1]`` of a user with no events.

        GRU: the projection of the zero state. LRU: ``[0, …, 0, 1]``, which ranks by the learned
        item bias alone (the model's popularity prior)."""
        if self.config.cell == "lru":
            return np.append(np.zeros(self.config.user_dim, np.float32), np.float32(1.0))
        zero = np.zeros((1, self.config.hidden_dim), dtype=np.float32)
        user = keras.ops.convert_to_numpy(self._with_one(self.project(zero)))[0]
        return np.asarray(user, dtype=np.float32)

    def save_weights(self, path: Path) -> None:
        """Save every weight to ``path`` (a ``.weights.h5`` file)."""
        self._owner().save_weights(str(path))

    def load_weights(self, path: Path) -> None:
        """Load weights saved by :meth:`save_weights`."""
        self._owner().load_weights(str(path))

    def _owner(self) -> keras.Model:
        items = keras.Input((None,), dtype="int32")
        events = keras.Input((None,), dtype="int32")
        user = self.sequence_model([items, events])
        outputs = [user, self.out_emb(items), self.out_bias(items)]
        return keras.Model([items, events], outputs, name="all")
