"""The user-interest model: item (+ event) embedding → GRU → projection, scored by inner product.

Per event ``t`` with item ``i_t`` and event type ``e_t``::

    x_t = item_emb[i_t] + event_emb[e_t]              (dropout on x_t while training)
    h_t = GRU(h_{t-1}, x_t)                            state, float32 [H]
    u_t = [W h_t + c, 1]                               user vector, float32 [D + 1]
    score(j) = <u_t, v_j>,  v_j = [out_emb[j], b_j]    catalog vector, float32 [D + 1]

With ``tied=True`` the output embeddings are the input item embeddings (``out_emb = item_emb``).

The item bias ``b_j`` is folded in as the last catalog dimension and the constant 1 as the last
user dimension, so that ranking stays a pure inner product for the native kernels.

Two Keras functional models share the layers: the *sequence* model (training and batch
evaluation; ``[B, T]`` items and events → ``[B, T, D + 1]`` user vectors) and the *step* model
(one event and the previous state → new state and user vector), which is what becomes
``step.tflite``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from pocketrec.core.events import EVENT_NAMES


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters; the defaults are what every dataset gets (chosen on validation only)."""

    num_items: int
    embedding_dim: int = 64
    hidden_dim: int = 128
    user_dim: int = 64
    dropout: float = 0.6
    max_len: int = 50
    batch_size: int = 256
    learning_rate: float = 5e-3
    max_epochs: int = 30
    patience: int = 3
    seed: int = 0
    tied: bool = False

    def __post_init__(self) -> None:
        if self.tied and self.user_dim != self.embedding_dim:
            raise ValueError(
                f"tied embeddings need user_dim == embedding_dim, got {self.user_dim} and "
                f"{self.embedding_dim}"
            )

    @property
    def catalog_dim(self) -> int:
        """Dimension of user and catalog vectors: ``user_dim + 1`` (the folded item bias)."""
        return self.user_dim + 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        raw = json.loads(text)
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**raw)


class InterestModel:
    """The layers of the model and the two functional models built on them."""

    def __init__(self, config: ModelConfig) -> None:
        keras.utils.set_random_seed(config.seed)
        self.config = config
        c = config
        self.item_emb = keras.layers.Embedding(c.num_items, c.embedding_dim, name="item_emb")
        self.event_emb = keras.layers.Embedding(len(EVENT_NAMES), c.embedding_dim, name="event_emb")
        self.dropout = keras.layers.Dropout(c.dropout, seed=c.seed, name="input_dropout")
        self.gru = keras.layers.GRU(c.hidden_dim, return_sequences=True, name="gru")
        self.state_dropout = keras.layers.Dropout(c.dropout, seed=c.seed + 1, name="state_dropout")
        self.project = keras.layers.Dense(c.user_dim, name="project")
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
        ones = keras.ops.ones_like(u[..., :1])
        return keras.ops.concatenate([u, ones], axis=-1)

    def _build_sequence_model(self) -> keras.Model:
        items = keras.Input((None,), dtype="int32", name="items")
        events = keras.Input((None,), dtype="int32", name="events")
        x = self.dropout(self.item_emb(items) + self.event_emb(events))
        h = self.state_dropout(self.gru(x))
        return keras.Model([items, events], self._with_one(self.project(h)), name="sequence")

    def _build_step_model(self) -> keras.Model:
        h_dim = self.config.hidden_dim
        item = keras.Input((1,), batch_size=1, dtype="int32", name="item")
        event = keras.Input((1,), batch_size=1, dtype="int32", name="event")
        state = keras.Input((h_dim,), batch_size=1, dtype="float32", name="state")
        x = self.item_emb(item)[:, 0, :] + self.event_emb(event)[:, 0, :]
        _, new_states = self.gru.cell(x, [state])
        new_state = new_states[0] if isinstance(new_states, list | tuple) else new_states
        user = self._with_one(self.project(new_state))
        return keras.Model([item, event, state], [new_state, user], name="step")

    def catalog(self) -> npt.NDArray[np.float32]:
        """Catalog vectors ``[N, D + 1]`` float32: output embeddings with the bias folded in."""
        emb = keras.ops.convert_to_numpy(self.out_emb.embeddings)
        bias = keras.ops.convert_to_numpy(self.out_bias.embeddings)
        return np.ascontiguousarray(np.concatenate([emb, bias], axis=1), dtype=np.float32)

    def initial_user(self) -> npt.NDArray[np.float32]:
        """The user vector ``[D + 1]`` of a user with no events (state zero)."""
        zero = np.zeros((1, self.config.hidden_dim), dtype=np.float32)
        projected = keras.ops.convert_to_numpy(self.project(zero))[0]
        return np.append(projected, np.float32(1.0)).astype(np.float32)

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
