"""``Recommender.recommend_batch(users, k)`` against a loop of ``recommend(k, user=u)``.

Opens a bundle, gives each of ``--users`` users ``--events`` random events (5% dismissals, so
demotion and the masks are exercised), then times both ways of ranking every user, interleaved
in one process (``--repeats`` rounds, the order alternating), and prints the medians and their
ratio. The results are checked to be the same ids before timing. Run from the repository root:

    python bench/bench_batch.py BUNDLE_DIR [--users 256] [--k 10] [--repeats 15] [--backend auto]

Machines are shared and noisy: quote the ratio, measured interleaved, not single timings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from pocketrec import Recommender


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--events", type=int, default=20, help="events per user")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rec = Recommender.open(args.bundle, backend=args.backend)
    item_ids = rec.ranking().served.item_ids
    rng = np.random.default_rng(args.seed)
    users = [f"user{n}" for n in range(args.users)]
    for user in users:
        for item in rng.integers(0, len(item_ids), args.events).tolist():
            rec.observe(item_ids[item], "dismiss" if rng.random() < 0.05 else "click", user=user)

    def loop() -> list[list[str]]:
        return [rec.recommend(args.k, user=user).ids for user in users]

    def batch() -> list[list[str]]:
        return [r.ids for r in rec.recommend_batch(users, args.k)]

    assert loop() == batch(), "recommend_batch differs from recommend"
    times: dict[str, list[float]] = {"loop": [], "batch": []}
    for round_ in range(args.repeats):
        order = [("loop", loop), ("batch", batch)]
        for name, call in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    info = rec.info()
    loop_ms = statistics.median(times["loop"]) * 1e3
    batch_ms = statistics.median(times["batch"]) * 1e3
    print(
        f"{info['items']:,} items, catalog {info['catalog_dtype']}, backend {info['backend']}, "
        f"{args.users} users, k={args.k}, medians of {args.repeats}"
    )
    print(f"loop of recommend: {loop_ms:.1f} ms ({loop_ms / args.users * 1e3:.0f} us a user)")
    print(f"recommend_batch:   {batch_ms:.1f} ms ({batch_ms / args.users * 1e3:.0f} us a user)")
    print(f"ratio loop / batch: {loop_ms / batch_ms:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
