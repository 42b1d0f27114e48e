"""Bring your own model: a plain Keras GRU4Rec trained on MovieLens-100k, exported as a pocketrec
bundle, opened with ``Recommender`` and checked against the Keras model's own metrics.

    python examples/gru4rec_ml100k.py --data ../shared/data/ml-100k --out /tmp/gru4rec-bundle
    pocketrec evaluate /tmp/gru4rec-bundle --data ../shared/data/ml-100k

The model is nothing pocketrec knows: ``Embedding -> GRU -> Dense`` gives a user vector after
every event, and an output ``Dense`` without bias scores every item (full softmax). Its kernel,
transposed, is the catalog: ``score(item j) = <user, kernel[:, j]>``. ``export`` steps the GRU
automatically (one event at a time, O(1) work each), converts it to TFLite, proves it against the
Keras model (parity gate) and writes a verified bundle. The split is pocketrec's leave-one-out
(``pocketrec evaluate`` uses the same), so the bundle's test metrics must equal the Keras model's
own full-ranking metrics on the same users.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pocketrec.converter import export
from pocketrec.converter.training import training_windows
from pocketrec.core import leave_one_out, load
from pocketrec.core.metrics import evaluate
from pocketrec.core.split import Split
from pocketrec.runtime import Recommender


def build(num_items: int, dim: int = 64) -> tuple[keras.Model, keras.Model, keras.layers.Dense]:
    """The user model (items ``[B, T]`` -> user vectors ``[B, T, dim]``), the training model
    (-> item logits ``[B, T, N]``) and the output layer whose kernel is the catalog."""
    items = keras.Input((None,), dtype="int32", name="items")
    x = keras.layers.Embedding(num_items, dim)(items)
    x = keras.layers.GRU(dim, return_sequences=True)(x)
    user = keras.layers.Dense(dim)(x)
    scores = keras.layers.Dense(num_items, use_bias=False)
    return keras.Model(items, user), keras.Model(items, scores(user)), scores


def train(split: Split, epochs: int, seed: int = 0) -> tuple[keras.Model, keras.Model, Any]:
    """Next-item prediction at every position of each user's last 51 training events."""
    keras.utils.set_random_seed(seed)
    user_model, train_model, scores = build(split.data.num_items)
    windows = training_windows(split, max_len=50)  # right-padded, padding weighs 0
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train_model.fit(
        windows.items,
        windows.targets,
        sample_weight=windows.weights,
        batch_size=64,
        epochs=epochs,
        verbose=0,
    )
    return user_model, train_model, scores


def keras_metrics(train_model: keras.Model, split: Split) -> dict[str, float]:
    """Full-ranking test metrics of the Keras model itself: its logits after each whole history
    (histories of one length run as one batch, so there is no padding)."""
    by_length: dict[int, list[int]] = {}
    for k in range(split.num_users):
        by_length.setdefault(len(split.history(k, "test")[0]), []).append(k)
    # compiled once for any [B, T] (eagerly, the GRU would loop in Python)
    last_logits = tf.function(
        lambda x: train_model(x, training=False)[:, -1],
        input_signature=[tf.TensorSpec((None, None), tf.int32)],
        autograph=False,
    )
    logits: dict[int, np.ndarray] = {}
    for users in by_length.values():
        batch = np.stack([split.history(k, "test")[0] for k in users]).astype(np.int32)
        out = last_logits(batch).numpy()
        logits.update({int(split.users[k]): row for k, row in zip(users, out, strict=True)})
    return evaluate(split, lambda user, _items, _events: logits[user], stage="test")


def main(data_dir: Path, out: Path, epochs: int = 5) -> dict[str, Any]:
    data, _report = load(data_dir)
    split = leave_one_out(data)
    user_model, train_model, scores = train(split, epochs)
    catalog = keras.ops.convert_to_numpy(scores.kernel).T  # [N, 64]
    result = export(
        user_model,
        catalog=catalog,
        item_ids=data.items.ids,
        titles=[data.item_titles.get(i) for i in range(data.num_items)],
        validation=data,
        out=out,
        overwrite=True,
    )
    rec = Recommender.open(out)
    first = data.sequences[0][:5]
    for item in first.tolist():
        rec.observe(data.items.ids[item], "click")
    ids, _scores = rec.recommend(5)
    return {
        "bundle": result.path,
        "parity": result.parity,
        "bundle_test": result.manifest.metrics["test"],
        "keras_test": keras_metrics(train_model, split),
        "recommended": [data.item_titles.get(data.items.index(i), i) for i in ids],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-100k"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    summary = main(args.data, args.out, args.epochs)
    for key in ("hr@10", "ndcg@10", "mrr"):
        keras_value, bundle_value = summary["keras_test"][key], summary["bundle_test"][key]
        print(f"{key}: Keras {keras_value:.4f}, bundle {bundle_value:.4f}")
    print("parity:", summary["parity"])
    print("recommended after 5 clicks:", summary["recommended"])
