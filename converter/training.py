"""Training the interest model: next-item prediction at every position of every training sequence.

- Inputs: each kept user's training events (everything before the validation target), the last
  ``max_len + 1`` of them; the model reads events ``0..T-2`` and predicts item ``t+1`` at each
  position ``t``. Positions whose next event is negative feedback (dislike, dismiss) are not
  targets, but those events are still inputs.
- Loss: full-softmax cross-entropy over the whole catalog by default; ``loss="sampled"`` uses a
  sampled softmax with ``num_sampled`` popularity-sampled negatives and the log-q correction (for
  large catalogs). When the schedule says so (a mean training window of at least
  ``history_mask_share`` of the catalog, ``schedule.py``), the full softmax leaves out the items
  each position has already read, other than its target (``without_history``), as evaluation
  and the runtime's ``exclude_seen`` leave them out of the ranking.
- Batches group sequences of similar length (less padding); batch order is shuffled per epoch.
  ``batching="events"`` sizes batches by training events (``batch_size`` * the mean window length)
  rather than by sequences, so every event weighs the same in the loss; ``"users"`` puts
  ``batch_size`` sequences in each batch, so each user weighs about the same. The batch size
  actually used and the epochs between validation passes follow the data's size
  (``schedule.py``; ``TrainingReport`` records them).
- Adam (AdamW when ``weight_decay > 0``); with ``plateau_decay < 1`` the learning rate is
  multiplied by it after every validation pass without a gain (of more than ``min_delta``).
- Early stopping on validation NDCG@10 (full ranking, history excluded), computed every
  ``valid_every`` epochs and after the last one, restoring the best validated epoch's weights: a
  pass restarts the patience count when it beats the score of the last pass that did by more
  than ``min_delta`` (0: any gain), training stops once ``patience`` epochs have passed since
  then, and the kept epoch is the best one even if its gain was smaller. With ``ema > 0``
  validation (and the kept weights) use an exponential moving average of the weights
  (``averaging.py``). Seeds are fixed by the config.
- When the schedule says so (the validation targets add at least ``refit_share`` of the refit's
  training positions, ``schedule.py``), training then starts over from the same initial weights
  with a fresh optimizer and moving average and runs the best epoch count (each epoch at the
  learning rate it had) without validation, on windows that also hold each user's validation
  target (``training_windows(..., until="test")``); that model is kept. The epoch count is all
  validation chose for it; the test target is never read.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from pocketrec.converter import schedule
from pocketrec.converter.averaging import WeightAverage
from pocketrec.converter.model import InterestModel, ModelConfig, output_embeddings
from pocketrec.core.events import negative_mask
from pocketrec.core.heldout import HeldOut, StageData
from pocketrec.core.progress import Progress
from pocketrec.core.split import Split, Stage
from pocketrec.runtime.evaluation import evaluate_user_vectors

Loss = Literal["full", "sampled"]
EVAL_BATCH = 512  # most histories per inference batch
EVAL_EVENTS = 32768  # most padded positions per inference batch (bounds its memory)


class Trainable(Protocol):
    """What the training loop needs of a model: ``InterestModel`` or a reference model."""

    config: ModelConfig
    sequence_model: keras.Model  # [B, T] items, events (int32) → [B, T, D + 1] user vectors
    out_emb: keras.layers.Embedding
    out_bias: keras.layers.Embedding

    def catalog(self) -> npt.NDArray[np.float32]: ...


M = TypeVar("M", bound=Trainable)


@dataclass(frozen=True)
class Windows:
    """Right-padded training windows ``[U, L]``: inputs, targets and target weights (0 = none)."""

    items: npt.NDArray[np.int32]
    events: npt.NDArray[np.int32]
    targets: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    lengths: npt.NDArray[np.int64]


def training_windows(split: Split, max_len: int, *, until: Stage = "valid") -> Windows:
    """One window per kept user with at least two events before its ``until`` target: the
    training events (``"valid"``), or those and the validation target (``"test"``, the refit)."""
    rows = []
    for k in range(split.num_users):
        items, events = split.history(k, until)
        items, events = items[-(max_len + 1) :], events[-(max_len + 1) :]
        if len(items) >= 2:
            rows.append((items, events))
    n, width = len(rows), max((len(r[0]) - 1 for r in rows), default=1)
    out = Windows(
        items=np.zeros((n, width), np.int32),
        events=np.zeros((n, width), np.int32),
        targets=np.zeros((n, width), np.int32),
        weights=np.zeros((n, width), np.float32),
        lengths=np.zeros(n, np.int64),
    )
    for r, (items, events) in enumerate(rows):
        t = len(items) - 1
        out.items[r, :t], out.events[r, :t] = items[:-1], events[:-1]
        out.targets[r, :t] = items[1:]
        out.weights[r, :t] = ~negative_mask(events[1:])
        out.lengths[r] = t
    return out


def length_batches(
    lengths: npt.NDArray[np.int64], batch: int, rng: np.random.Generator, *, by_events: bool = False
) -> list[npt.NDArray[np.int64]]:
    """Row indices grouped by similar length (random among equals), batches in random order.

    ``batch`` windows per batch; with ``by_events``, windows are instead added to a batch until
    it holds ``batch * mean length`` positions (so every training event weighs the same in the
    loss, whatever its sequence's length)."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    if not by_events:
        batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    else:
        budget = batch * float(lengths.mean())
        ends = np.cumsum(lengths[order])
        cuts = np.searchsorted(ends, np.arange(budget, ends[-1], budget), side="right")
        batches = [b for b in np.split(order, np.unique(cuts)) if len(b)]
    rng.shuffle(batches)
    return batches


def user_vectors(
    model: Trainable, items: list[npt.NDArray[np.int32]], events: list[npt.NDArray[np.int8]]
) -> npt.NDArray[np.float32]:
    """User vectors ``[U, D + 1]`` float32 after each whole history (inference mode).

    Histories are batched by similar length, at most ``EVAL_BATCH`` of them and ``EVAL_EVENTS``
    padded positions per batch (one history alone if it is longer), so memory grows with the
    longest history, not with the number of users."""
    lengths = np.array([len(h) for h in items], dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("every history must have at least one event")
    out = np.zeros((len(items), model.config.catalog_dim), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        # Sorted by length: the batch's last row is its widest.
        count = 1
        while (
            count < EVAL_BATCH
            and start + count < len(order)
            and (count + 1) * lengths[order[start + count]] <= EVAL_EVENTS
        ):
            count += 1
        rows = order[start : start + count]
        start += count
        width = int(lengths[rows].max())
        x_items = np.zeros((len(rows), width), np.int32)
        x_events = np.zeros((len(rows), width), np.int32)
        for r, row in enumerate(rows):
            x_items[r, : lengths[row]] = items[row]
            x_events[r, : lengths[row]] = events[row]
        last = _inference(model.sequence_model)(x_items, x_events, lengths[rows].astype(np.int32))
        out[rows] = keras.ops.convert_to_numpy(last)
    return out


_INFERENCE: weakref.WeakKeyDictionary[keras.Model, Callable[..., Any]] = weakref.WeakKeyDictionary()


def _inference(sequence_model: keras.Model) -> Callable[..., Any]:
    """``(items [B, T], events [B, T], lengths [B]) → [B, D + 1]``: the sequence model's output
    at each row's last event, compiled once per model for any ``B`` and ``T``."""
    if sequence_model not in _INFERENCE:
        spec = tf.TensorSpec((None, None), tf.int32)
        owner = weakref.ref(sequence_model)  # a strong one would keep the cache's key alive

        def last(items: tf.Tensor, events: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
            model = owner()
            assert model is not None, "called through the cache, which holds only live models"
            seq = model([items, events], training=False)
            return tf.gather(seq, lengths - 1, axis=1, batch_dims=1)

        _INFERENCE[sequence_model] = tf.function(
            last, input_signature=[spec, spec, tf.TensorSpec((None,), tf.int32)]
        )
    return _INFERENCE[sequence_model]


def evaluate_model(model: Trainable, data: StageData) -> dict[str, float]:
    """Metrics of the Keras model on ``data`` with the float32 catalog."""
    users = user_vectors(model, data.items, data.events)
    return evaluate_user_vectors(model.catalog(), users, data.targets, data.excluded)


@dataclass
class TrainingReport:
    """What happened during training (saved as ``train_report.json``)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_early: bool = False
    epochs_run: int = 0  # training epochs (``epochs`` holds one row per validation pass)
    batch_size: int = 0  # as derived by ``schedule.derive``
    batches_per_epoch: int = 0
    valid_every: int = 1
    window: int = 0  # events per training window, as derived by ``schedule.window``
    mask_history: bool = False  # as derived by ``schedule.derive``
    refit_epochs: int = 0  # epochs of the refit on training + validation targets (0: none)
    refit_seconds: float = 0.0


def smoothed_cross_entropy(
    logits: tf.Tensor, targets: tf.Tensor, smoothing: float, *, shown: tf.Tensor | None = None
) -> tf.Tensor:
    """Softmax cross-entropy of ``logits`` ``[P, I]`` (float32) against the targets ``[P]``
    (int32) smoothed with ``smoothing`` of the mass spread evenly over the ``I`` items:
    ``-(1 - s) log p_t - s mean_i log p_i``; ``[P]`` float32, without a ``[P, I]`` one-hot.
    ``shown``: the logits the softmax ranks when they differ from ``logits`` (the history
    mask's, ``-inf`` at hidden items); the smoothing still reads ``logits``, every item."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=logits if shown is None else shown
    )
    if smoothing <= 0:
        return ce
    # -mean_i log p_i = lse - mean(l) and -log p_t = lse - l_t, so the mix is ce + s (l_t - mean l)
    target_logit = tf.gather(logits, targets, batch_dims=1)
    return ce + smoothing * (target_logit - tf.reduce_mean(logits, axis=1))


def without_history(
    logits: tf.Tensor, targets: tf.Tensor, items: tf.Tensor, where: tf.Tensor
) -> tf.Tensor:
    """``logits`` ``[P, I]`` float32 with ``-inf`` at the items each position has already read
    (its window's inputs up to and including it) other than its target: the items that
    evaluation and ``recommend(exclude_seen=True)`` never rank. ``targets`` ``[P]`` int32;
    ``items`` ``[B, T]`` int32 the batch's inputs; ``where`` ``[P, 2]`` int64 the positions'
    ``(row, t)``.

    Built from each row's first reading of every item (``[B, I]``, a scatter-min of ``B * T``
    steps): position ``(b, t)`` has read item ``i`` when that first step is ``<= t``."""
    rows, width = tf.shape(items)[0], tf.shape(items)[1]
    steps = tf.broadcast_to(tf.range(width)[None, :], tf.shape(items))
    at = tf.stack([tf.broadcast_to(tf.range(rows)[:, None], tf.shape(items)), items], axis=-1)
    never = tf.fill([rows, tf.shape(logits)[1]], width)
    first = tf.tensor_scatter_nd_min(never, tf.reshape(at, [-1, 2]), tf.reshape(steps, [-1]))
    read = tf.gather(first, where[:, 0]) <= tf.cast(where[:, 1:2], tf.int32)  # [P, I]
    read &= tf.range(tf.shape(logits)[1])[None, :] != targets[:, None]
    return tf.where(read, tf.constant(-np.inf, logits.dtype), logits)


def _loss_fn(
    model: Trainable,
    loss: Loss,
    num_sampled: int,
    popularity: npt.NDArray[np.float64],
    mask_history: bool,
) -> Callable[..., Any]:
    out_emb, out_bias = model.out_emb, model.out_bias
    num_items = model.config.num_items
    smoothing = model.config.label_smoothing
    unigrams = (popularity + 1.0).tolist()

    def compute(
        users: tf.Tensor, targets: tf.Tensor, items: tf.Tensor, where: tf.Tensor
    ) -> tf.Tensor:
        weights = tf.concat([output_embeddings(out_emb, model.config), out_bias.embeddings], 1)
        if loss == "full" or num_sampled >= num_items:
            logits = tf.matmul(users, weights, transpose_b=True)
            shown = without_history(logits, targets, items, where) if mask_history else None
            return tf.reduce_mean(smoothed_cross_entropy(logits, targets, smoothing, shown=shown))
        labels = tf.cast(tf.reshape(targets, (-1, 1)), tf.int64)
        sampled = tf.random.fixed_unigram_candidate_sampler(
            labels, 1, num_sampled, unique=True, range_max=num_items, unigrams=unigrams
        )
        return tf.reduce_mean(
            tf.nn.sampled_softmax_loss(
                weights=weights,
                biases=tf.zeros((num_items,)),
                labels=labels,
                inputs=users,
                num_sampled=num_sampled,
                num_classes=num_items,
                sampled_values=sampled,
                remove_accidental_hits=True,
            )
        )

    return compute


def planned(
    split: Split, config: ModelConfig, valid: StageData
) -> tuple[int, Windows, Windows, schedule.Schedule]:
    """The training window (events), the windows cut with it (training events; and for the
    refit, training events and validation targets) and the schedule, as derived from ``split``
    by the rules of ``schedule.py`` (``valid``: the validation stage of ``split``)."""
    window = schedule.window(config, np.array([len(t) for t in split.train], np.int64))
    windows = training_windows(split, window)
    if len(windows.lengths) == 0:
        raise ValueError("no user has two training events: nothing to train on")
    refit = training_windows(split, window, until="test")
    plan = schedule.derive(
        config,
        windows=len(windows.lengths),
        train_events=int(windows.lengths.sum()),
        valid_events=sum(len(h) for h in valid.items),
        refit_events=int(refit.lengths.sum()),
    )
    return window, windows, refit, plan


def train(
    split: Split,
    config: ModelConfig,
    *,
    loss: Loss = "full",
    num_sampled: int = 1000,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    show_progress: bool = True,
    min_delta: float = 0.0,
) -> tuple[InterestModel, TrainingReport]:
    """Train the step model on ``split`` with early stopping on validation NDCG@10; returns the
    best epoch's model (see :func:`fit`)."""
    return fit(
        InterestModel(config),
        split,
        loss=loss,
        num_sampled=num_sampled,
        on_epoch=on_epoch,
        show_progress=show_progress,
        min_delta=min_delta,
    )


def fit(
    model: M,
    split: Split,
    *,
    loss: Loss = "full",
    num_sampled: int = 1000,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    show_progress: bool = True,
    min_delta: float = 0.0,
) -> tuple[M, TrainingReport]:
    """The training loop for any :class:`Trainable` (its ``config`` gives the settings): the
    model's weights end as the best epoch's (or their moving average with ``config.ema``).
    ``min_delta`` (>= 0): the validation NDCG@10 gain that restarts the patience count (module
    docstring)."""
    if min_delta < 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta}")
    start = time.perf_counter()
    config = model.config
    sampled = loss != "full" and num_sampled < config.num_items
    if config.label_smoothing > 0 and sampled:
        raise ValueError(
            f"label_smoothing={config.label_smoothing} applies to the full softmax only: use "
            f"loss='full' (--loss full) or label_smoothing=0 with the sampled softmax"
        )
    valid = HeldOut.from_split(split).stage("valid")
    window, windows, refit_windows, plan = planned(split, config, valid)
    if plan.mask_history and sampled:
        raise ValueError(
            f"the history mask (a mean training window of at least history_mask_share="
            f"{config.history_mask_share} of the catalog) applies to the full softmax only: use "
            f"loss='full' (--loss full), or history_mask_share=1 (--history-mask-share 1: never "
            f"mask) with the sampled softmax"
        )
    popularity = np.bincount(windows.targets[windows.weights > 0], minlength=config.num_items)
    compute_loss = _loss_fn(
        model, loss, num_sampled, popularity.astype(np.float64), plan.mask_history
    )
    variables = (
        model.sequence_model.trainable_weights
        + ([] if config.tied else model.out_emb.trainable_weights)
        + model.out_bias.trainable_weights
    )
    optimizer = (
        keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
        if config.weight_decay > 0
        else keras.optimizers.Adam(learning_rate=config.learning_rate)
    )
    average = WeightAverage(variables, config.ema) if config.ema > 0 else None
    spec = tf.TensorSpec((None, None), tf.int32)

    def step(
        items: tf.Tensor, events: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor
    ) -> tf.Tensor:
        with tf.GradientTape() as tape:
            users = model.sequence_model([items, events], training=True)
            where = tf.where(weights > 0)
            value = compute_loss(
                tf.gather_nd(users, where), tf.gather_nd(targets, where), items, where
            )
        grads = tape.gradient(value, variables)
        optimizer.apply(grads, variables)
        if average is not None:
            average.update()
        return value

    train_step = tf.function(
        step,
        input_signature=[spec, spec, spec, tf.TensorSpec((None, None), tf.float32)],
        reduce_retracing=True,
    )

    def run_epoch(label: str, data: Windows, rng: np.random.Generator) -> Progress | None:
        """One pass over ``data``'s windows in shuffled length batches; the open progress bar."""
        batches = length_batches(
            data.lengths, plan.batch_size, rng, by_events=config.batching == "events"
        )
        if data is windows:
            report.batches_per_epoch = len(batches)
        bar = Progress(label, total=len(batches)) if show_progress else None
        for rows in batches:
            width = int(data.lengths[rows].max())
            value = train_step(
                data.items[rows, :width],
                data.events[rows, :width],
                data.targets[rows, :width],
                data.weights[rows, :width],
            )
            losses.append(float(value))
            if bar is not None:
                bar.update(1, loss=float(np.mean(losses)))
        return bar

    rng = np.random.default_rng(config.seed)
    report = TrainingReport(
        batch_size=plan.batch_size,
        valid_every=plan.valid_every,
        window=window,
        mask_history=plan.mask_history,
    )
    initial = [v.numpy() for v in variables]
    best_score, best_weights, waited = -1.0, initial, 0
    gained = -1.0  # the score of the last epoch that restarted the patience count
    losses: list[float] = []  # since the last validation pass
    rates: list[float] = []  # the learning rate each epoch ran with, for the refit to replay
    for epoch in range(1, config.max_epochs + 1):
        report.epochs_run = epoch
        rates.append(float(optimizer.learning_rate.numpy()))
        bar = run_epoch(f"epoch {epoch:>2}", windows, rng)
        if epoch % plan.valid_every and epoch < config.max_epochs:
            if bar is not None:
                bar.close()
            continue
        with average.swapped() if average is not None else nullcontext():
            metrics = evaluate_model(model, valid)
            snapshot = [v.numpy() for v in variables]
        row = {
            "epoch": float(epoch),
            "loss": float(np.mean(losses)),
            **{f"valid_{k}": v for k, v in metrics.items()},
        }
        losses = []
        report.epochs.append(row)
        if bar is not None:
            bar.close(hr10=metrics["hr@10"], ndcg10=metrics["ndcg@10"])
        if on_epoch is not None:
            on_epoch(row)
        if metrics["ndcg@10"] > best_score:
            best_score, best_weights = metrics["ndcg@10"], snapshot
            report.best_epoch, report.best_valid = epoch, metrics
        if metrics["ndcg@10"] > gained + min_delta:
            gained, waited = metrics["ndcg@10"], 0
        else:
            waited += plan.valid_every
            if config.plateau_decay < 1.0:
                optimizer.learning_rate.assign(optimizer.learning_rate * config.plateau_decay)
            if waited >= config.patience:
                report.stopped_early = True
                break
    if plan.refit and report.best_epoch > 0:
        # Training again from the same initial weights and a fresh optimizer, for the best epoch
        # count, on windows that also hold each user's validation target (never the test's).
        refit_start = time.perf_counter()
        for variable, value in zip(variables, initial, strict=True):
            variable.assign(value)
        for slot in optimizer.variables:
            slot.assign(tf.zeros_like(slot))
        if average is not None:
            average.reset()
        rng, losses = np.random.default_rng(config.seed), []
        for epoch in range(1, report.best_epoch + 1):
            optimizer.learning_rate.assign(rates[epoch - 1])
            bar = run_epoch(f"refit {epoch:>2}", refit_windows, rng)
            if bar is not None:
                bar.close()
        with average.swapped() if average is not None else nullcontext():
            best_weights = [v.numpy() for v in variables]
        report.refit_epochs = report.best_epoch
        report.refit_seconds = time.perf_counter() - refit_start
    for variable, value in zip(variables, best_weights, strict=True):
        variable.assign(value)
    report.seconds = time.perf_counter() - start
    return model, report
