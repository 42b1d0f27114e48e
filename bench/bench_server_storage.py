"""Intake throughput of the server's PostgreSQL storage: the three ways of storing a batch.

``json``: the batch travels as one JSON text parameter in one ``INSERT … SELECT FROM
json_to_recordset(…)`` statement (the ``event_ids`` guard and the events insert in one CTE,
autocommit). ``unnest``: the same with the batch as seven arrays. ``copy``: the batch is COPYed
into a per-connection temporary table and the same insert runs from it, in one transaction. The
storage's default, ``intake="auto"``, picks by batch size (``COPY_MIN_EVENTS``) from these figures.
For
each batch size, each repeat stores ``--events`` new events in a fresh schema from ``--threads``
threads (each its own device, its own pooled connection), with PostgreSQL's durable defaults
(``synchronous_commit = on``, fsync). Also ``sqlite`` (one SQLite file, ``synchronous=FULL``) as
the embedded reference. Prints the median events/s over the repeats as a markdown table.

Needs a PostgreSQL database: run from the repository root as

    tools/with_postgres.sh python bench/bench_server_storage.py [--events 20000] [--repeats 5]

(``POCKETREC_TEST_POSTGRES`` names it; the SQLite files go to a temporary folder on disk).
Machines are shared and noisy: compare medians, never single timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from pocketrec.server.storage import FeedbackStorage
from pocketrec.server.storage_postgres import Intake, PostgresFeedbackStorage
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage
from pocketrec.server.validation import EventRecord

CONTEXT = '{"screen":"home","position":3}'


def batches(device: int, count: int, size: int) -> list[list[EventRecord]]:
    """``count`` batches of ``size`` fresh events of one device."""
    out = []
    for b in range(count):
        out.append(
            [
                EventRecord(str(uuid.uuid4()), b * size + k + 1, f"user{k % 7}",
                            f"i{(b * size + k) % 5000:05d}", "click", 1.7e9 + k, CONTEXT)
                for k in range(size)
            ]
        )  # fmt: skip
    return out


def run_once(storage: FeedbackStorage, total: int, size: int, threads: int) -> float:
    """Events/s storing ``total`` new events in batches of ``size`` from ``threads`` threads."""
    per_thread = total // (size * threads)
    work = [batches(t, per_thread, size) for t in range(threads)]
    start = threading.Barrier(threads + 1)

    def upload(device: int) -> None:
        start.wait()
        for batch in work[device]:
            assert storage.insert_events(f"device{device}", batch) == len(batch)

    pool = [threading.Thread(target=upload, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - began
    assert storage.count_events() == per_thread * size * threads
    return per_thread * size * threads / seconds


def fresh_postgres(base: str, intake: Intake, threads: int) -> Callable[[], FeedbackStorage]:
    def open_fresh() -> FeedbackStorage:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in base else "?"
        return PostgresFeedbackStorage(
            f"{base}{sep}options=-csearch_path%3D{name}", intake=intake, max_connections=threads
        )

    return open_fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per repeat")
    parser.add_argument("--sizes", default="25,100,500", help="batch sizes (comma-separated)")
    parser.add_argument("--threads", default="1,4", help="uploading threads (comma-separated)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="folder for the SQLite files")
    args = parser.parse_args()
    base = os.environ.get("POCKETREC_TEST_POSTGRES")
    if not base:
        print("set POCKETREC_TEST_POSTGRES (run under tools/with_postgres.sh)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(dir=args.dir))
    print(f"{args.events} events per repeat, median of {args.repeats} repeats; events/s\n")
    print("| backend | batch | threads | events/s (median) | runs |")
    print("|---|---:|---:|---:|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        for size in [int(s) for s in args.sizes.split(",")]:
            openers: dict[str, Callable[[], FeedbackStorage]] = {
                "postgres json": fresh_postgres(base, "json", threads),
                "postgres unnest": fresh_postgres(base, "unnest", threads),
                "postgres copy": fresh_postgres(base, "copy", threads),
                "sqlite": lambda: SqliteFeedbackStorage(work / f"{uuid.uuid4().hex}.db"),
            }
            runs: dict[str, list[float]] = {name: [] for name in openers}
            for _ in range(args.repeats):
                for name, open_fresh in openers.items():  # interleaved: drift hits all alike
                    storage = open_fresh()
                    try:
                        runs[name].append(run_once(storage, args.events, size, threads))
                    finally:
                        storage.close()
            for name, values in runs.items():
                shown = ", ".join(f"{v:,.0f}" for v in values)
                print(f"| {name} | {size} | {threads} | {statistics.median(values):,.0f} | "
                      f"{shown} |")  # fmt: skip
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
