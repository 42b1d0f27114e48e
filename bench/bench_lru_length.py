"""Training-step time, validation time and peak memory of the LRU's sequence form against history
length ``T``: the chunked scan (``lru.py``, the default) and the old whole-history Toeplitz form.

The old form is the same layer with a chunk at least as long as the history (one chunk: the
``[T, T, N]`` kernel), so both columns run the same code path apart from the chunk size. Each
(form, T) cell runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own:
it builds the default LRU model (``ModelConfig`` defaults, 2,000 items), then times

- *train step*: one gradient step (full-softmax cross-entropy at every position, Adam) on a batch
  of ``--train-rows`` random sequences of ``T`` events, compiled with ``tf.function`` as in
  training (median of ``--repeats`` after one warm-up);
- *validation*: ``training.user_vectors`` (the pass validation, evaluation and the converter's
  metrics make) over ``--valid-rows`` random histories of ``T`` events (median of ``--repeats``).

The old form is skipped above ``--old-max`` events (its kernel alone is ``T² · N`` complex
floats: 12.8 GB at T = 5,000). Machines are shared and noisy: compare medians and the per-event
columns (µs per event should stay about flat as T grows if the cost is linear).

    python bench/bench_lru_length.py [--lengths 100,200,500,1000,2000,5000] [--repeats 3]

With ``--data PATH`` (a dataset ``pocketrec train`` reads) it instead times one validation pass
over that dataset's validation histories (``training.evaluate_model``, what every epoch runs) with
the chunked form and with the whole-history Toeplitz form, interleaved in one process (median of
``--repeats``; the old form is batched like the new one, at most 32,768 positions per batch):

    python bench/bench_lru_length.py --data ../shared/data/ml-100k --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

ITEMS = 2000


def _cell(form: str, length: int, train_rows: int, valid_rows: int, repeats: int) -> dict:
    """One (form, T) measurement, in this process."""
    import keras
    import tensorflow as tf

    from pocketrec.converter.model import InterestModel, ModelConfig
    from pocketrec.converter.training import user_vectors

    model = InterestModel(ModelConfig(num_items=ITEMS))
    if form == "toeplitz":
        for block in model.blocks:
            block.recurrence.chunk = length
    rng = np.random.default_rng(0)
    items = rng.integers(0, ITEMS, size=(train_rows, length)).astype(np.int32)
    events = rng.integers(0, 3, size=(train_rows, length)).astype(np.int32)
    targets = rng.integers(0, ITEMS, size=(train_rows, length)).astype(np.int32)
    variables = model.sequence_model.trainable_weights + model.out_bias.trainable_weights
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)

    @tf.function
    def step(items: tf.Tensor, events: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            users = model.sequence_model([items, events], training=True)
            catalog = tf.concat([model.out_emb.embeddings, model.out_bias.embeddings], axis=1)
            logits = tf.einsum("btd,nd->btn", users, catalog)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            )
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def timed(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    step(items, events, targets)  # trace and warm up
    train = timed(lambda: float(step(items, events, targets)))
    histories = [rng.integers(0, ITEMS, size=length).astype(np.int32) for _ in range(valid_rows)]
    kinds = [np.zeros(length, np.int8) for _ in range(valid_rows)]
    user_vectors(model, histories[:1], kinds[:1])  # warm up
    valid = timed(lambda: user_vectors(model, histories, kinds))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"train_s": train, "valid_s": valid, "peak_mb": peak_mb}


def _dataset(path: str, repeats: int) -> None:
    """Validation pass on a real dataset, chunked vs whole-history form, interleaved."""
    from pocketrec.converter.model import InterestModel, ModelConfig
    from pocketrec.converter.training import evaluate_model
    from pocketrec.core import leave_one_out, load
    from pocketrec.core.heldout import HeldOut

    data, _ = load(path)
    valid = HeldOut.from_split(leave_one_out(data)).stage("valid")
    longest = max(len(h) for h in valid.items)
    # Two models with equal weights (same seed); the chunk is read when the pass is compiled.
    forms = {"chunked": InterestModel(ModelConfig(num_items=data.num_items))}
    forms["toeplitz"] = InterestModel(ModelConfig(num_items=data.num_items))
    for block in forms["toeplitz"].blocks:
        block.recurrence.chunk = longest
    times: dict[str, list[float]] = {form: [] for form in forms}
    metrics = {}
    for _ in range(repeats + 1):  # the first round traces and warms up
        for form, model in forms.items():
            start = time.perf_counter()
            metrics[form] = evaluate_model(model, valid)
            times[form].append(time.perf_counter() - start)
    events = sum(len(h) for h in valid.items)
    print(f"{path}: {len(valid.items)} validation histories, {events} events, longest {longest}")
    for form in forms:
        print(
            f"{form}: validation pass median {statistics.median(times[form][1:]):.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in times[form][1:])}), "
            f"ndcg@10 {metrics[form]['ndcg@10']:.6f}"
        )
    ratio = statistics.median(times["toeplitz"][1:]) / statistics.median(times["chunked"][1:])
    print(f"toeplitz / chunked: {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="100,200,500,1000,2000,5000")
    parser.add_argument("--train-rows", type=int, default=8, help="sequences per training batch")
    parser.add_argument("--valid-rows", type=int, default=32, help="histories validated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-max", type=int, default=500, help="longest T for the old form")
    parser.add_argument("--data", help="time a validation pass on this dataset instead")
    parser.add_argument("--cell", nargs=2, metavar=("FORM", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data:
        _dataset(args.data, args.repeats)
        return
    if args.cell:
        form, length = args.cell[0], int(args.cell[1])
        print(json.dumps(_cell(form, length, args.train_rows, args.valid_rows, args.repeats)))
        return
    print(
        f"train step: {args.train_rows} sequences of T events; validation: {args.valid_rows} "
        f"histories of T events; median of {args.repeats}; peak = process max RSS\n"
    )
    print("| T | form | train step s | µs/event | validation s | µs/event | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for length in (int(t) for t in args.lengths.split(",")):
        for form in ("chunked", "toeplitz"):
            if form == "toeplitz" and length > args.old_max:
                print(f"| {length} | toeplitz | skipped: [T, T, N] kernel above T = "
                      f"{args.old_max} | | | | |")  # fmt: skip
                continue
            command = [sys.executable, __file__, "--cell", form, str(length)]
            command += ["--train-rows", str(args.train_rows), "--valid-rows", str(args.valid_rows)]
            command += ["--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            cell = json.loads(done.stdout.strip().splitlines()[-1])
            train_us = cell["train_s"] / (args.train_rows * length) * 1e6
            valid_us = cell["valid_s"] / (args.valid_rows * length) * 1e6
            print(
                f"| {length} | {form} | {cell['train_s']:.3f} | {train_us:.1f} | "
                f"{cell['valid_s']:.3f} | {valid_us:.1f} | {cell['peak_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
