"""The training loss: label smoothing without a one-hot matrix equals Keras' smoothed
categorical cross-entropy, 0 is the plain sparse cross-entropy, and the history mask hides what
each position has read."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="training needs the `convert` extra")

from pocketrec.converter.training import smoothed_cross_entropy, without_history  # noqa: E402


@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.1, 0.5, 0.9])
def test_smoothed_cross_entropy_equals_the_one_hot_form(smoothing: float) -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (64, 300)).astype(np.float32)
    targets = rng.integers(0, 300, 64).astype(np.int32)
    got = smoothed_cross_entropy(tf.constant(logits), tf.constant(targets), smoothing).numpy()
    keras_loss = tf.keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=smoothing, reduction="none"
    )
    want = keras_loss(tf.one_hot(targets, 300), tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    plain = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    if smoothing == 0:
        np.testing.assert_array_equal(got, plain.numpy())
    else:
        assert not np.allclose(got, plain.numpy())
    # With the history mask the softmax ranks `shown`; the smoothing still spreads over `logits`.
    shown = logits.copy()
    shown[np.arange(64), (targets + 1) % 300] = -np.inf
    masked = smoothed_cross_entropy(
        tf.constant(logits), tf.constant(targets), smoothing, shown=tf.constant(shown)
    ).numpy()
    ranked = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=shown).numpy()
    np.testing.assert_allclose(masked - ranked, got - plain.numpy(), rtol=1e-4, atol=1e-4)
    # A hidden item no longer takes probability from the target (a tiny share may round away).
    assert (masked <= got + 1e-6).all()
    assert masked.sum() < got.sum()


def test_label_smoothing_with_the_sampled_softmax_is_refused_not_ignored() -> None:
    from pocketrec.converter.config import ModelConfig
    from pocketrec.converter.training import train
    from pocketrec.core import synthetic
    from pocketrec.core.split import leave_one_out

    data = synthetic.generate(num_users=60, num_items=40, seed=1)
    config = ModelConfig(
        num_items=data.num_items,
        embedding_dim=8,
        hidden_dim=8,
        user_dim=8,
        label_smoothing=0.1,
        history_mask_share=1.0,
    )
    with pytest.raises(ValueError, match=r"label_smoothing=0.1 applies to the full softmax only"):
        train(leave_one_out(data), config, loss="sampled", num_sampled=10, show_progress=False)


def test_the_history_mask_with_the_sampled_softmax_is_refused_not_ignored() -> None:
    from pocketrec.converter.config import ModelConfig
    from pocketrec.converter.training import train
    from pocketrec.core import synthetic
    from pocketrec.core.split import leave_one_out

    # Synthetic histories of ~20 events over 40 items: far above 0.5% of the catalog.
    split = leave_one_out(synthetic.generate(num_users=60, num_items=40, seed=1))
    small = {"num_items": 40, "embedding_dim": 8, "hidden_dim": 8, "user_dim": 8, "max_epochs": 1}
    with pytest.raises(ValueError, match=r"history mask .* applies to the full softmax only"):
        train(split, ModelConfig(**small), loss="sampled", num_sampled=10, show_progress=False)
    never = ModelConfig(**small, history_mask_share=1.0)
    _, report = train(split, never, loss="sampled", num_sampled=10, show_progress=False)
    assert not report.mask_history
    _, report = train(split, ModelConfig(**small), show_progress=False)
    assert report.mask_history


def test_label_smoothing_outside_0_1_is_refused() -> None:
    from pocketrec.converter.config import ModelConfig

    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            ModelConfig(num_items=10, label_smoothing=bad)


def test_history_mask_hides_exactly_the_items_read_so_far_except_the_target() -> None:
    rng = np.random.default_rng(8)
    num_items, rows, width = 9, 5, 7
    items = rng.integers(0, num_items, (rows, width)).astype(np.int32)
    where = np.array([(b, t) for b in range(rows) for t in range(width) if rng.random() < 0.7])
    targets = rng.integers(0, num_items, len(where)).astype(np.int32)
    targets[0] = items[where[0][0], where[0][1]]  # a target the position has just read
    logits = rng.normal(size=(len(where), num_items)).astype(np.float32)
    got = without_history(tf.constant(logits), tf.constant(targets), tf.constant(items),
                          tf.constant(where, tf.int64)).numpy()  # fmt: skip
    for p, (b, t) in enumerate(where):
        seen = set(items[b, : t + 1].tolist()) - {int(targets[p])}
        hidden = set(np.flatnonzero(np.isneginf(got[p])).tolist())
        assert hidden == seen
        kept = ~np.isneginf(got[p])
        np.testing.assert_array_equal(got[p][kept], logits[p][kept])
    assert np.isfinite(got[0, targets[0]])
