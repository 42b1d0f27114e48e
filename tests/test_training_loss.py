"""The training loss: label smoothing without a one-hot matrix equals Keras' smoothed
categorical cross-entropy, and 0 is the plain sparse cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="training needs the `convert` extra")

from pocketrec.converter.training import smoothed_cross_entropy  # noqa: E402


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


def test_label_smoothing_with_the_sampled_softmax_is_refused_not_ignored() -> None:
    from pocketrec.converter.config import ModelConfig
    from pocketrec.converter.training import train
    from pocketrec.core import synthetic
    from pocketrec.core.split import leave_one_out

    data = synthetic.generate(num_users=60, num_items=40, seed=1)
    config = ModelConfig(
        num_items=data.num_items, embedding_dim=8, hidden_dim=8, user_dim=8, label_smoothing=0.1
    )
    with pytest.raises(ValueError, match="applies to the full softmax only"):
        train(leave_one_out(data), config, loss="sampled", num_sampled=10, show_progress=False)


def test_label_smoothing_outside_0_1_is_refused() -> None:
    from pocketrec.converter.config import ModelConfig

    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            ModelConfig(num_items=10, label_smoothing=bad)
