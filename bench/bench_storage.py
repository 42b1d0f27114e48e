"""Throughput of the device store's event log: durable single appends and batched appends.

Rows: one event per transaction (``Store.append``) with ``durability="full"`` (one fsync per
event: survives power loss) and ``"normal"`` (survives app crashes), and batches of 100 events
per transaction (``Store.append_many``) with both. Each repeat uses a fresh store file in
``--dir`` (put it on the disk you care about: a tmpfs would hide the fsync cost). The script prints
the median events/s over the repeats as a markdown table.

``observe()`` latency with a database attached (p50/p99, durability full and normal, next to
no db on the same bundle) is measured by ``bench/bench_runtime.py``, which needs a trained step
model; this script only needs the store.

Run from the repository root:

    python bench/bench_storage.py [--events 500] [--batches 50] [--repeats 5] [--dir DIR]

Machines are shared and noisy: compare medians, never single timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from pocketrec.storage import NewEvent, Store
from pocketrec.storage.connection import Durability

BATCH = 100
CONTEXT = {"screen": "home", "position": 3}
OBSERVE_NOTE = (
    "observe() latency with a db attached (p50/p99, durability full and normal): see "
    "bench/bench_runtime.py"
)


@dataclass(frozen=True)
class Row:
    write: str
    durability: Durability
    events_per_second: float
    spread: tuple[float, float]

    @property
    def microseconds_per_event(self) -> float:
        return 1e6 / self.events_per_second


def single_appends(store: Store, count: int) -> int:
    for n in range(count):
        store.append("bench-user", f"item-{n}", "click", context=CONTEXT)
    return count


def batched_appends(store: Store, batches: int) -> int:
    for b in range(batches):
        store.append_many(
            [NewEvent("bench-user", f"item-{b}-{n}", "view", context=CONTEXT) for n in range(BATCH)]
        )
    return batches * BATCH


def measure(
    folder: str, durability: Durability, work: Callable[[Store], int], repeats: int
) -> tuple[float, tuple[float, float]]:
    """Median and (min, max) events/s over ``repeats`` fresh stores."""
    rates = []
    for repeat in range(repeats):
        path = os.path.join(folder, f"bench-{durability}-{repeat}-{time.monotonic_ns()}.sqlite")
        with Store.open(path, durability=durability, max_pending_events=10**7) as store:
            store.append("warm-up", "item", "view")  # opens the connection, first page writes
            start = time.perf_counter()
            events = work(store)
            elapsed = time.perf_counter() - start
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        rates.append(events / elapsed)
    return statistics.median(rates), (min(rates), max(rates))


def table(rows: list[Row]) -> str:
    lines = [
        "| write | durability | events/s (median) | µs per event | min to max events/s |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row.spread
        lines.append(
            f"| {row.write} | {row.durability} | {row.events_per_second:,.0f} | "
            f"{row.microseconds_per_event:,.1f} | {low:,.0f} to {high:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="single appends per repeat")
    parser.add_argument("--batches", type=int, default=50, help="batches of 100 per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", help="folder for the store files (default: the temp folder)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        durabilities: tuple[Durability, ...] = ("full", "normal")
        for durability in durabilities:
            rate, spread = measure(
                folder, durability, lambda s: single_appends(s, args.events), args.repeats
            )
            rows.append(Row("single append (1 event / transaction)", durability, rate, spread))
        for durability in durabilities:
            rate, spread = measure(
                folder, durability, lambda s: batched_appends(s, args.batches), args.repeats
            )
            rows.append(
                Row(f"append_many ({BATCH} events / transaction)", durability, rate, spread)
            )
        where = folder
    print(
        f"pocketrec store: {args.repeats} repeats, {args.events} single appends and "
        f"{args.batches} x {BATCH} batched per repeat; SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"files in {os.path.dirname(where)}"
    )
    print()
    print(table(rows))
    print()
    print(OBSERVE_NOTE)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                [
                    {
                        "write": row.write,
                        "durability": row.durability,
                        "events_per_second": row.events_per_second,
                        "min": row.spread[0],
                        "max": row.spread[1],
                    }
                    for row in rows
                ],
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
