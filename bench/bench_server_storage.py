"""Intake throughput of the server's PostgreSQL storage: the three ways of storing a batch.

``json``: the batch travels as one JSON text parameter in one ``INSERT … SELECT FROM
json_array_elements(…)`` statement (the ``event_ids`` guard and the events insert in one CTE,
autocommit; batches queued meanwhile share it: the group commit). ``unnest``: the same with the
batch as seven arrays. ``copy``: the batch is COPYed into a per-connection temporary table and
the same insert runs from it, in one transaction. The storage's default, ``intake="auto"``,
picks by batch size (``COPY_MIN_EVENTS``) from these figures. For
each batch size, each repeat stores ``--events`` new events in a fresh schema from ``--threads``
threads (each its own device, its own pooled connection), with PostgreSQL's durable defaults
(``synchronous_commit = on``, fsync). Also ``sqlite`` (one SQLite file, ``synchronous=FULL``) as
the embedded reference. Prints the median events/s over the repeats as a markdown table, with
PostgreSQL's own CPU seconds per 1,000 events (its server processes, ``/proc``) and how many
batches each group commit wrote (more threads: more batches queued per commit).

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
from dataclasses import dataclass
from pathlib import Path

import psycopg
from bench_server import Postgres, tree_cpu_seconds

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


@dataclass(frozen=True)
class Run:
    """One repeat: events/s, PostgreSQL's CPU seconds per 1,000 events (its server processes;
    ``None`` for SQLite) and the batches each group commit wrote on average."""

    events_per_s: float
    db_cpu_per_1000: float | None
    batches_per_commit: float | None


def run_once(
    storage: SqliteFeedbackStorage | PostgresFeedbackStorage,
    total: int,
    size: int,
    threads: int,
    postmaster: int | None,
) -> Run:
    """Store ``total`` new events in batches of ``size`` from ``threads`` threads."""
    per_thread = max(1, total // (size * threads))
    work = [batches(t, per_thread, size) for t in range(threads)]
    start = threading.Barrier(threads + 1)

    def upload(device: int) -> None:
        start.wait()
        for batch in work[device]:
            assert storage.insert_events(f"device{device}", batch) == len(batch)

    pool = [threading.Thread(target=upload, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    db = postmaster if isinstance(storage, PostgresFeedbackStorage) else None
    cpu_before = tree_cpu_seconds([db]) if db else 0.0
    groups_before = storage.committer.groups
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - began
    cpu = tree_cpu_seconds([db]) - cpu_before if db else None
    groups = storage.committer.groups - groups_before
    events = per_thread * size * threads
    assert storage.count_events() == events
    return Run(
        events_per_s=events / seconds,
        db_cpu_per_1000=None if cpu is None else 1000 * cpu / events,
        batches_per_commit=per_thread * threads / groups if groups else None,
    )


Opener = Callable[[], SqliteFeedbackStorage | PostgresFeedbackStorage]


def fresh_postgres(base: str, intake: Intake, threads: int) -> Opener:
    def open_fresh() -> PostgresFeedbackStorage:
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
    cluster = Postgres.from_env()
    postmaster = cluster.postmaster() if cluster is not None else None
    print(f"{args.events} events per repeat, median of {args.repeats} repeats\n")
    print("| backend | batch | threads | events/s (median) | runs | PostgreSQL CPU s / 1,000 "
          "events (median) | batches / commit (median) |")  # fmt: skip
    print("|---|---:|---:|---:|---|---:|---:|")
    for threads in [int(t) for t in args.threads.split(",")]:
        for size in [int(s) for s in args.sizes.split(",")]:
            openers: dict[str, Opener] = {
                "postgres json": fresh_postgres(base, "json", threads),
                "postgres unnest": fresh_postgres(base, "unnest", threads),
                "postgres copy": fresh_postgres(base, "copy", threads),
                "sqlite": lambda: SqliteFeedbackStorage(work / f"{uuid.uuid4().hex}.db"),
            }
            runs: dict[str, list[Run]] = {name: [] for name in openers}
            for _ in range(args.repeats):
                for name, open_fresh in openers.items():  # interleaved: drift hits all alike
                    storage = open_fresh()
                    try:
                        runs[name].append(run_once(storage, args.events, size, threads, postmaster))
                    finally:
                        storage.close()
            for name, done in runs.items():
                speeds = [r.events_per_s for r in done]
                cpus = [r.db_cpu_per_1000 for r in done if r.db_cpu_per_1000 is not None]
                cpu = f"{statistics.median(cpus):.4f}" if cpus else "—"
                groups = [r.batches_per_commit for r in done if r.batches_per_commit]
                grouped = f"{statistics.median(groups):.1f}" if groups else "— (alone)"
                print(f"| {name} | {size} | {threads} | {statistics.median(speeds):,.0f} | "
                      f"{', '.join(f'{v:,.0f}' for v in speeds)} | {cpu} | "
                      f"{grouped} |")  # fmt: skip
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
