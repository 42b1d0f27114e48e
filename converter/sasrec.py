"""SASRec (Kang & McAuley, 2018): a causal self-attention model over the whole history.

Not an on-device model (it re-reads the history for every recommendation): the benchmarks train
it with the step model's loop and defaults (``fit(SASRec(config), split)``) as a same-protocol
reference. Architecture as RecBole's ``SASRec``: item +
learned position embeddings, LayerNorm, dropout, post-LN transformer blocks (``heads`` heads,
GELU feed-forward 4E), tied output embeddings plus an item bias, truncated-normal(0.02) weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import ops

from pocketrec.converter.lru import weight_init
from pocketrec.converter.model import ModelConfig, catalog_vectors, unit_rows


class _Block(keras.layers.Layer):
    def __init__(self, heads: int, dropout: float, std: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads, self.rate, self.std, self.seed = heads, dropout, std, seed

    def build(self, input_shape: Any) -> None:
        e = int(input_shape[-1])
        self.attention = keras.layers.MultiHeadAttention(
            self.heads,
            e // self.heads,
            dropout=self.rate,
            # Unseeded (the global seed still fixes it): MultiHeadAttention clones its
            # initializer per projection, and a seeded clone would give Q = K = V at the start.
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.std),
        )
        self.attention.build(input_shape, input_shape)
        self.ff_in = keras.layers.Dense(
            4 * e, kernel_initializer=weight_init(self.std, self.seed + 1)
        )
        self.ff_out = keras.layers.Dense(e, kernel_initializer=weight_init(self.std, self.seed + 2))
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], 4 * e))
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-12)
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-12)
        self.norm_1.build(input_shape)
        self.norm_2.build(input_shape)
        self.drop_1 = keras.layers.Dropout(self.rate, seed=self.seed + 3)
        self.drop_2 = keras.layers.Dropout(self.rate, seed=self.seed + 4)

    def call(self, x: Any, training: bool | None = None) -> Any:
        a = self.attention(x, x, use_causal_mask=True, training=training)
        z = self.norm_1(x + self.drop_1(a, training=training))
        f = self.ff_out(ops.gelu(self.ff_in(z), approximate=False))
        return self.norm_2(z + self.drop_2(f, training=training))


class SASRec:
    """The layers and the sequence model (``[B, T]`` items, events → ``[B, T, E + 1]``)."""

    def __init__(self, config: ModelConfig, *, heads: int = 2) -> None:
        keras.utils.set_random_seed(config.seed)
        c = self.config = config
        std = c.init_std if c.init_std > 0 else 0.02
        self.item_emb = keras.layers.Embedding(
            c.num_items, c.embedding_dim, embeddings_initializer=weight_init(std, c.seed + 101)
        )
        self.pos_emb = keras.layers.Embedding(
            c.max_len, c.embedding_dim, embeddings_initializer=weight_init(std, c.seed + 103)
        )
        self.out_emb = self.item_emb
        self.out_bias = keras.layers.Embedding(c.num_items, 1, embeddings_initializer="zeros")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-12)
        self.dropout = keras.layers.Dropout(c.dropout, seed=c.seed)
        self.blocks = [
            _Block(heads, c.dropout, std, c.seed + 10 * (i + 1)) for i in range(c.num_layers)
        ]
        items = keras.Input((None,), dtype="int32")
        events = keras.Input((None,), dtype="int32")
        # Positions past max_len share the last position embedding (histories are longer than
        # the training windows only at evaluation, and rarely).
        pos = ops.minimum(ops.cumsum(ops.ones_like(items), axis=1) - 1, c.max_len - 1)
        x = self.dropout(self.norm(self.item_emb(items) + self.pos_emb(pos)))
        for block in self.blocks:
            x = block(x)
        if c.cosine_temperature > 0:  # the cosine score, as InterestModel's (model.py)
            x = unit_rows(x) / c.cosine_temperature
        ones = ops.ones_like(x[..., :1])
        self.sequence_model = keras.Model([items, events], ops.concatenate([x, ones], -1))
        self.out_bias.build((None,))

    def catalog(self) -> npt.NDArray[np.float32]:
        """Catalog vectors ``[N, E + 1]`` float32: item embeddings with the bias folded in."""
        return catalog_vectors(self.out_emb, self.out_bias, self.config)
