"""Peak memory and wall time of ``pocketrec export-feedback`` on a server database of N events.

Fills a SQLite server database (``SqliteFeedbackStorage.insert_events``, the same call the
``POST /v1/events`` route makes) with a synthetic fleet once, then runs the export command
``--repeats`` times per format and prints, per format, the median peak resident memory, wall and
CPU seconds as a markdown table, with the number of Parquet files and their row groups' size.

The fleet: ``--devices`` phones (1-3 profiles each) log events over ``--days`` days (20,000
items, power-law popularity; 30% with a context object); ``--arrival sync`` (default) uploads them
the way ``SyncClient`` does: each device syncs every few hours (5% of gaps are days offline),
sending what it logged since in batches of at most 500, so the server's arrival order follows
event time with late uploads spanning days. ``--arrival shuffled`` gives every event a time drawn
uniformly over the days, independent of when it arrives: the worst case for a day-partitioned
export read in arrival order (every batch touches every day).

Run from the repository root (the database is built once and reused from ``--dir``):

    python bench/bench_export.py --events 1000000 --repeats 3 [--formats parquet,csv]
        [--arrival sync|shuffled] [--dir /tmp/pocketrec-export-bench]

Each run is ``/usr/bin/time -v pocketrec export-feedback --db DB --out OUT --format F`` (peak
memory = GNU time's "Maximum resident set size"). Machines are shared and noisy: compare medians,
never single timings.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketrec.core.events import EVENT_NAMES
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage
from pocketrec.server.validation import EventRecord

START = 1_714_521_600.0  # 2024-05-01T00:00:00Z
DAY = 86_400.0
ITEMS = 20_000
BATCH = 500
EVENT_MIX = (0.55, 0.3, 0.03, 0.06, 0.03, 0.03)  # view, click, purchase, like, dislike, dismiss
HOURS = 3_600.0
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)


@dataclass(frozen=True)
class Upload:
    """One upload request: device ``device`` sends its events ``start:end`` at ``at``."""

    at: float
    device: int
    start: int
    end: int


def _device_events(
    rng: np.random.Generator, count: int, days: int, arrival: str
) -> tuple[np.ndarray, list[tuple[float, int, int]]]:
    """One device's event times (sorted by arrival) and its uploads ``(time, start, end)``."""
    times = np.sort(rng.uniform(START, START + days * DAY, count))
    gaps = rng.exponential(6 * HOURS, 4 * days + 8)
    offline = rng.random(gaps.size) < 0.05
    gaps[offline] = rng.exponential(3 * DAY, int(offline.sum()))
    syncs = START + np.cumsum(gaps)
    syncs = np.append(syncs[syncs < START + days * DAY], START + days * DAY + HOURS)
    uploads: list[tuple[float, int, int]] = []
    start = 0
    for at in syncs:
        end = int(np.searchsorted(times, at, side="right"))
        for lo in range(start, end, BATCH):
            uploads.append((float(at), lo, min(lo + BATCH, end)))
        start = end
    if arrival == "shuffled":
        times = rng.uniform(START, START + days * DAY, count)
    return times, uploads


def fill(db: Path, events: int, devices: int, days: int, arrival: str, seed: int) -> None:
    """Create ``db`` holding ``events`` synthetic events from ``devices`` devices."""
    rng = np.random.default_rng(seed)
    per_device = np.full(devices, events // devices)
    per_device[: events % devices] += 1
    popularity = 1.0 / np.arange(1, ITEMS + 1) ** 0.9
    popularity /= popularity.sum()
    fleet = []
    uploads: list[Upload] = []
    for d in range(devices):
        n = int(per_device[d])
        times, device_uploads = _device_events(rng, n, days, arrival)
        items = rng.choice(ITEMS, n, p=popularity)
        kinds = rng.choice(len(EVENT_NAMES), n, p=EVENT_MIX)
        profiles = rng.integers(0, rng.integers(1, 4), n)
        contexts = rng.random(n) < 0.3
        fleet.append((times, items, kinds, profiles, contexts))
        uploads += [Upload(at, d, lo, hi) for at, lo, hi in device_uploads]
    uploads.sort(key=lambda u: (u.at, u.device, u.start))
    tmp = db.with_name(db.name + ".filling")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    storage = SqliteFeedbackStorage(tmp)
    try:
        for u in uploads:
            times, items, kinds, profiles, contexts = fleet[u.device]
            ids = rng.bytes(16 * (u.end - u.start))
            batch = [
                EventRecord(
                    event_id=str(uuid.UUID(bytes=ids[16 * k : 16 * k + 16], version=4)),
                    seq=j + 1,
                    user_id=f"u{profiles[j]}",
                    item_id=f"i{items[j]:05d}",
                    event_type=EVENT_NAMES[kinds[j]],
                    timestamp=float(times[j]),
                    context=f'{{"screen":"home","position":{j % 20}}}' if contexts[j] else None,
                )
                for k, j in enumerate(range(u.start, u.end))
            ]
            storage.insert_events(f"phone-{u.device:05d}", batch)
        stored = storage.count_events()
    finally:
        storage.close()
    if stored != events:
        raise RuntimeError(f"stored {stored} events, expected {events}")
    os.replace(tmp, db)
    print(f"filled {db}: {events:,} events, {len(uploads):,} uploads", file=sys.stderr)


@dataclass(frozen=True)
class Run:
    peak_rss_mb: float
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to a busy shared machine


def export_once(db: Path, out: Path, fmt: str) -> Run:
    """Run ``pocketrec export-feedback`` under ``/usr/bin/time -v``; its peak RSS (MB, GNU
    time's "Maximum resident set size") and wall seconds. (``ru_maxrss`` of a child of this
    process would also count the forked copy of this process before ``exec``.)"""
    if out.is_dir():
        shutil.rmtree(out)
    out.unlink(missing_ok=True)
    cmd = [TIME, "-v", sys.executable, "-m", "pocketrec", "export-feedback", "--db", str(db),
           "--out", str(out), "--format", fmt]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr}")
    found = {
        key: re.search(pattern, done.stderr)
        for key, pattern in (
            ("peak", r"Maximum resident set size \(kbytes\): (\d+)"),
            ("user", r"User time \(seconds\): ([\d.]+)"),
            ("system", r"System time \(seconds\): ([\d.]+)"),
        )
    }
    values = {key: float(match.group(1)) for key, match in found.items() if match is not None}
    if len(values) != len(found):
        raise RuntimeError(f"unexpected output of {TIME} -v: {done.stderr}")
    return Run(values["peak"] / 1024, seconds, values["user"] + values["system"])  # KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--arrival", choices=("sync", "shuffled"), default="sync")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pocketrec-export-bench"))
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    name = f"server-{args.events}-{args.devices}-{args.days}-{args.arrival}-{args.seed}.sqlite"
    db = args.dir / name
    if not db.is_file():
        fill(db, args.events, args.devices, args.days, args.arrival, args.seed)
    print(f"database: {db} ({db.stat().st_size / 1e6:.0f} MB)")
    print("| format | events | peak RSS, MiB (median; min-max) | wall s (median; min-max) "
          "| CPU s (median) | files | rows per row group (median) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fmt in args.formats.split(","):
        out = args.dir / f"export-{fmt}"
        runs = [export_once(db, out, fmt) for _ in range(args.repeats)]
        rss = [r.peak_rss_mb for r in runs]
        secs = [r.seconds for r in runs]
        cpu = statistics.median(r.cpu_seconds for r in runs)
        files, group_rows = _layout(out) if fmt == "parquet" else (1, "-")
        print(
            f"| {fmt} | {args.events:,} | {statistics.median(rss):.0f} ({min(rss):.0f}-"
            f"{max(rss):.0f}) | {statistics.median(secs):.1f} ({min(secs):.1f}-{max(secs):.1f}) "
            f"| {cpu:.1f} | {files} | {group_rows} |",
            flush=True,
        )


def _layout(out: Path) -> tuple[int, str]:
    """Number of Parquet files of an export and the median rows of its row groups."""
    import pyarrow.parquet as pq

    files = sorted(out.rglob("*.parquet"))
    groups = [
        meta.row_group(k).num_rows
        for meta in (pq.read_metadata(f) for f in files)
        for k in range(meta.num_row_groups)
    ]
    return len(files), f"{statistics.median(groups):,.0f}" if groups else "-"


if __name__ == "__main__":
    main()
