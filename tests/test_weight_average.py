"""The exponential moving average of weights used for evaluation during training."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

import tensorflow as tf

from pocketrec.converter.averaging import WeightAverage


def test_average_follows_the_warmed_up_recurrence() -> None:
    w = tf.Variable(np.zeros(3, np.float32))
    average = WeightAverage([w], momentum=0.9)
    expected = np.zeros(3)
    for t in range(30):
        w.assign(np.full(3, t + 1.0, np.float32))
        average.update()
        m = min(0.9, (1 + t) / (10 + t))
        expected = m * expected + (1 - m) * (t + 1.0)
    np.testing.assert_allclose(average.shadow[0].numpy(), expected, rtol=1e-5)


def test_swapped_holds_the_average_and_restores_the_raw_weights() -> None:
    w = tf.Variable(np.ones(2, np.float32))
    average = WeightAverage([w], momentum=0.5)
    w.assign([5.0, 7.0])
    average.update()
    shadow = average.shadow[0].numpy()
    seen = []

    def evaluate() -> None:
        with average.swapped():
            seen.append(w.numpy().copy())
            raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        evaluate()
    np.testing.assert_array_equal(seen[0], shadow)
    np.testing.assert_array_equal(w.numpy(), [5.0, 7.0])


def test_update_runs_inside_tf_function() -> None:
    w = tf.Variable(np.zeros(2, np.float32))
    average = WeightAverage([w], momentum=0.99)
    step = tf.function(average.update)
    w.assign([10.0, 10.0])
    for _ in range(3):
        step()
    assert average.steps.numpy() == 3
    assert 0 < average.shadow[0].numpy()[0] < 10


@pytest.mark.parametrize("momentum", [0.0, 1.0, -0.5])
def test_momentum_outside_the_open_interval_is_refused(momentum: float) -> None:
    with pytest.raises(ValueError, match="momentum"):
        WeightAverage([tf.Variable(1.0)], momentum=momentum)
