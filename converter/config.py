"""The interest model's hyper-parameters (:class:`ModelConfig`): plain data, no TensorFlow, so
``pocketrec train --help`` can show the defaults without importing Keras."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

CELLS = ("gru", "lru")
BATCHING = ("events", "users")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters; the defaults are what every dataset gets (chosen on validation only).

    ``hidden_dim`` is the GRU state size, or the complex state size ``N`` of each LRU block;
    ``num_layers`` counts LRU blocks (0: the cell's default, 2 LRU blocks or the GRU's one layer);
    ``r_min`` is the smallest initial ``|λ|`` of the LRU; ``weight_decay > 0`` switches Adam to
    AdamW; ``plateau_decay < 1`` multiplies the learning rate by it after every validation
    pass without a gain; ``init_std > 0`` draws the embeddings and the LRU's weight matrices from
    a normal truncated at ±2 std (0: Keras' uniform embeddings and Glorot matrices); ``ema > 0``
    evaluates and keeps an exponential moving average of the weights with that momentum;
    ``batching`` is ``"events"`` (batches of about ``batch_size`` * the mean window length
    training events) or ``"users"`` (``batch_size`` sequences per batch); ``min_batches > 0``
    lowers the batch size of a small dataset so that an epoch has about that many batches (0:
    ``batch_size`` as given); ``valid_every`` is the number of epochs between validation passes
    (0: derived from the data's history lengths); ``max_len`` is the training window, doubled up
    to ``max_window`` while its windows hold under 90% of the training positions (``max_window
    <= max_len``: fixed); ``label_smoothing`` spreads that share of the full-softmax target evenly
    over all items (0: off); the items a position has already read are left out of its softmax
    when the mean training window holds at least ``history_mask_share`` of the catalog (0:
    always, >= 1: never). The rules: ``schedule.py``. ``cosine_temperature > 0`` scores an item
    by the cosine of the user and item embeddings divided by it, plus the item bias (both sides
    scaled to unit length inside the model, so ranking stays one inner product; 0: the inner
    product of the raw vectors). After early stopping, training starts again from the same initial
    weights for the best epoch count on the training events plus each user's validation target
    (the test target is never read) and keeps that model, when those targets add at least
    ``refit_share`` of the refit's training positions (0: always, >= 1: never).
    """

    num_items: int
    embedding_dim: int = 64
    hidden_dim: int = 128
    user_dim: int = 64
    dropout: float = 0.5
    max_len: int = 50
    max_window: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    max_epochs: int = 100
    patience: int = 10
    seed: int = 0
    tied: bool = True
    cell: str = "lru"
    num_layers: int = 0
    r_min: float = 0.0
    weight_decay: float = 0.0
    plateau_decay: float = 1.0
    ema: float = 0.998
    init_std: float = 0.02
    batching: str = "events"
    min_batches: int = 32
    valid_every: int = 0
    label_smoothing: float = 0.0
    history_mask_share: float = 0.005
    cosine_temperature: float = 0.0
    refit_share: float = 0.05

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (0: off), got {self.ema}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1) (0: off), got {self.label_smoothing}"
            )
        if self.history_mask_share < 0:
            raise ValueError(
                f"history_mask_share must be >= 0 (0: always mask, >= 1: never), got "
                f"{self.history_mask_share}"
            )
        if self.refit_share < 0:
            raise ValueError(
                f"refit_share must be >= 0 (0: always refit, >= 1: never), got {self.refit_share}"
            )
        if self.cosine_temperature < 0:
            raise ValueError(
                f"cosine_temperature must be >= 0 (0: raw inner product), got "
                f"{self.cosine_temperature}"
            )
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0 (0: Keras' initializers), got {self.init_std}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.min_batches < 0 or self.valid_every < 0:
            raise ValueError(
                f"min_batches and valid_every must be >= 0 (0: off / derived), got "
                f"{self.min_batches} and {self.valid_every}"
            )
        if self.num_layers == 0:
            object.__setattr__(self, "num_layers", 2 if self.cell == "lru" else 1)
        if self.cell == "gru" and self.num_layers != 1:
            raise ValueError(f"the GRU model has one layer, got num_layers={self.num_layers}")
        needs_equal = self.tied or self.cell == "lru"
        if needs_equal and self.user_dim != self.embedding_dim:
            raise ValueError(
                f"tied embeddings and the LRU model need user_dim == embedding_dim, got "
                f"{self.user_dim} and {self.embedding_dim}"
            )

    @property
    def state_dim(self) -> int:
        """Floats of recurrent state per user: ``hidden_dim`` (GRU) or ``2 * hidden_dim`` per
        LRU layer (real and imaginary parts)."""
        return self.hidden_dim if self.cell == "gru" else 2 * self.hidden_dim * self.num_layers

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
        raw.setdefault("cell", "gru")  # written before the cell was a choice: a GRU
        # Written before these were choices: what training did then.
        earlier = (("init_std", 0.0), ("ema", 0.0), ("batching", "users"), ("min_batches", 0),
                   ("max_window", 0), ("history_mask_share", 1.0),
                   ("refit_share", 1.0))  # fmt: skip
        for name, then in (*earlier, ("valid_every", 1)):
            raw.setdefault(name, then)
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**raw)
